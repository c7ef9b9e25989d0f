"""Get or build the code cache of a corpus for one registered VQ-VAE version: a Ray Data stage.

``EncodeStage`` has the shape of every batch stage (``pipeline.data.stage``): its resources
(CPUs, GPUs, actors), ``setup()`` that loads the registered VQ-VAE once per actor, and rows
in and out. A song that cannot be encoded becomes a quarantine row with its reason, recorded
in the cache (``code_cache.quarantine_song``) instead of ending the run. The driver commits
each song as it arrives, so a killed run resumes with the songs left; when all are in,
``cache.json`` marks the cache complete and lists what was quarantined.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import code_cache
from pipeline.data.shards import SONGS, read_table
from pipeline.data.stage import RowStage
from pipeline.data.vocab import artist_id, genre_ids, latest_vocab

IN_HAND = ".in-hand"  # the encoders' marks of the songs in their hands, while a cache is built


@dataclass
class EncodeSettings:
    chunk_samples: int = 2 ** 19  # audio encoded at once (~12 s): bounds the actor's memory on long songs
    context_samples: int = 2 ** 15  # audio either side of a chunk, encoded and dropped: no seams at chunk edges
    # (the paper's bottom level sees ~26 k samples either side: dilations up to 3**7 frames of 8 samples)
    actors: int = 1
    gpus: float = 0.0  # per actor (> 0: encode on a GPU)
    cpus: float = 1.0
    pitch_shifts: tuple[float, ...] = ()  # semitones: each song also encoded shifted by each (augmentation)


class EncodeStage(RowStage):
    """Cache keys in (``song_id``), codes out; the registered VQ-VAE loaded once per actor."""

    name = "encode"
    uses_actors = True
    row_key = "song_id"  # the cache key
    outputs = {"codes": [], "stage": "", "error": "", "error_kind": ""}

    def __init__(self, vqvae_uri: str, tracking_uri: str, shards: str, settings: EncodeSettings, crash_dir: str | None = None):
        super().__init__(crash_dir)
        self.vqvae_uri, self.tracking_uri, self.shards, self.settings = vqvae_uri, tracking_uri, shards, settings

    def resources(self) -> dict[str, float]:
        return {"num_cpus": self.settings.cpus, "num_gpus": self.settings.gpus}

    def setup(self) -> None:
        import torch

        from pipeline.data.shards import ShardReader
        from pipeline.registry import load_model

        torch.set_num_threads(max(1, int(self.settings.cpus)))
        self.device = torch.device("cuda" if self.settings.gpus > 0 and torch.cuda.is_available() else "cpu")
        model, registered = load_model(self.vqvae_uri, self.tracking_uri)
        self.model, self.hop = model.to(self.device), model.hop_length
        self.sample_rate = int(registered.card["sample_rate"])  # the shards are written at this rate
        self.reader = ShardReader(self.shards)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"codes": self.encode_song(row["song_id"]).astype(np.int16).tolist()}

    def encode_song(self, key: str) -> np.ndarray:
        """The codes of a cache key: a song, or a song pitch-shifted (``code_cache.variant_key``)."""
        from pipeline.codec import encode_audio

        if not self._ready:
            self.setup()
            self._ready = True
        song_id, shift = code_cache.split_key(key)
        n = int(self.reader.songs[song_id]["num_samples"])
        read = lambda lo, hi: self.reader.read_window(song_id, lo, hi - lo).mean(axis=1, keepdims=True)  # noqa: E731 (mono)
        if shift:
            shifted = pitch_shifted(read(0, n)[:, 0], self.sample_rate, shift)[:, None]
            read = lambda lo, hi: shifted[lo:hi]  # noqa: E731
        s = self.settings
        return encode_audio(self.model, read, n, s.chunk_samples, s.context_samples, self.device)


def pitch_shifted(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """A mono song shifted in pitch, same length and tempo (librosa's phase vocoder, then soxr).
    The whole song at once: a phase vocoder run in chunks would leave seams; a 10-minute song
    at 44.1 kHz is ~100 MB of float32 while it is shifted."""
    import librosa

    out = librosa.effects.pitch_shift(np.ascontiguousarray(audio, dtype=np.float32), sr=sample_rate, n_steps=semitones,
                                      res_type="soxr_hq")
    return np.clip(out, -1.0, 1.0)[:len(audio)]


def get_or_build(shards: str | Path, vqvae, tracking_uri: str, settings: EncodeSettings | None = None,
                 root: str | Path = "") -> tuple[Path, dict[str, Any]]:
    """The complete cache of ``vqvae`` (a ``RegisteredModel``) over the shards: reused when it exists,
    completed when a run was killed, built otherwise. Returns (folder, facts incl. throughput)."""
    settings = settings or EncodeSettings()
    shards = Path(shards)
    folder = code_cache.cache_folder(root or shards / code_cache.CODES, vqvae.name, vqvae.version, vqvae.run_id,
                                     settings.pitch_shifts)
    meta = code_cache.read_meta(folder)
    if meta is not None:
        return folder, {"code_cache": code_cache.cache_id(folder), "reused": True, "songs": meta["songs"],
                        "quarantined": len(meta.get("quarantined", []))}
    vocab_version, vocab = latest_vocab(shards / "vocab")
    table = read_table(shards, SONGS, ["song_id", "num_samples", "sample_rate", "artist", "genres"])
    songs = {r["song_id"]: r for r in (table.to_pylist() if table is not None else [])}
    hop = int(vqvae.card["hop_length"])
    keys = {code_cache.variant_key(s, shift): s for s in songs if songs[s]["num_samples"] >= hop
            for shift in (0.0, *settings.pitch_shifts)}
    settled = {k for k, r in code_cache.quarantined_songs(folder).items() if r["kind"] == "input"}  # the rest are tried again
    todo = sorted(set(keys) - code_cache.encoded_songs(folder) - settled)
    started, audio_s = time.time(), sum(songs[keys[k]]["num_samples"] / songs[keys[k]]["sample_rate"] for k in todo)
    quarantined, last_line = 0, time.time()
    if todo:
        print(f"code cache {folder.name}: encoding {len(todo)} song(s), {audio_s:,.0f} s of audio", flush=True)
    for done, row in enumerate(_encode(todo, vqvae, tracking_uri, shards, settings, folder / IN_HAND), 1):
        if time.time() - last_line >= 10:  # a line every 10 s (the stage's own line says when it is done)
            rate = done / max(time.time() - started, 1e-9)
            print(f"code cache {folder.name}: {done}/{len(todo)} songs, ~{(len(todo) - done) / rate:,.0f} s left", flush=True)
            last_line = time.time()
        if row["status"] != "ok":
            code_cache.quarantine_song(folder, row["song_id"], row["stage"], row["error"], row["error_kind"])
            quarantined += 1
            continue
        song = songs[keys[row["song_id"]]]
        code_cache.write_song(folder, {
            "song_id": row["song_id"], "level": vqvae.card["level"], "hop_length": hop, "codes": row["codes"],
            "num_tokens": len(row["codes"]), "total_length": song["num_samples"], "sample_rate": song["sample_rate"],
            "artist_id": artist_id(vocab, song["artist"] or "") if vocab else 0,
            "genre_ids": genre_ids(vocab, song["genres"] or []) if vocab else [0], "vocab_version": vocab_version})
    seconds = time.time() - started
    shutil.rmtree(folder / IN_HAND, ignore_errors=True)
    meta = code_cache.complete(folder, {
        "vqvae": vqvae.uri, "vqvae_run_id": vqvae.run_id, "level": vqvae.card["level"],
        "hop_length": hop, "codebook_size": int(vqvae.card["codebook_size"]), "sample_rate": int(vqvae.card["sample_rate"]),
        "vocab_version": vocab_version, "shards": str(shards.resolve()), "pitch_shifts": list(settings.pitch_shifts)})
    if quarantined:
        print(f"code cache {folder.name}: {quarantined} song(s) could not be encoded (quarantined; reasons in "
              f"{folder / code_cache.CACHE_FILE})", flush=True)
    return folder, {"code_cache": code_cache.cache_id(folder), "reused": False, "songs": meta["songs"], "encoded_songs": len(todo),
                    "quarantined": len(meta["quarantined"]), "encode_seconds": round(seconds, 2), "encoded_audio_s": round(audio_s, 1),
                    "encode_audio_s_per_s": round(audio_s / seconds, 1) if todo and seconds > 0 else None}


def _encode(todo: list[str], vqvae, tracking_uri: str, shards: Path, settings: EncodeSettings, crash_dir: Path):
    """Rows of (song_id, status, codes or the quarantine reason), as the actor pool finishes them.
    ``crash_dir``: the songs' marks, so that one that kills its worker is quarantined (``RowStage``)."""
    import ray

    if not todo:
        return
    shutil.rmtree(crash_dir, ignore_errors=True)  # a killed build's marks: its deaths were not the songs'
    crash_dir.mkdir(parents=True)
    if not ray.is_initialized():  # not Ray Data's bare ray.init(): it attaches to whatever cluster the host last ran
        from pipeline.services import init_ray

        init_ray(None, max(2, int(settings.actors * settings.cpus + 1.999)), progress=False)
    args = dict(vqvae_uri=vqvae.uri, tracking_uri=tracking_uri, shards=str(shards), settings=settings, crash_dir=str(crash_dir))
    resources = EncodeStage(**args).resources()  # set-up is lazy: nothing is loaded here
    ds = ray.data.from_items([{"song_id": k, "status": "ok"} for k in todo], override_num_blocks=len(todo)).map_batches(
        EncodeStage, fn_constructor_kwargs=args, batch_size=EncodeStage.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=settings.actors), num_cpus=resources["num_cpus"],
        num_gpus=resources["num_gpus"] or None)
    yield from ds.iter_rows()
