"""``jobs/sample.py``: songs from the registered models, resumable, logged to MLflow.

In order: resolve and check the model set and the conditioning names (before any sampling);
the top level in windows; each upsampled level in segments (over Ray actors with ``--workers``);
decode; the page; the MLflow run. Everything sampled is saved as it is made (``codes/``): a
rerun of the same command into the same ``--out`` continues and ends with the same audio.

Output folder::

    request.json            what was asked (a different request into the same folder is refused)
    codes/<level>.npy       (n_samples, tokens) int16 per finished level
    codes/partial/<level>-<segment>.npy   a segment's codes after its last finished window
    sample-<i>.wav          the decoded bottom level (other levels: <level>/sample-<i>.wav)
    index.html, *.png       the page: each sample's audio, spectrogram and lyrics
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ConfigError, flatten
from pipeline.sample.config import LEVELS, SampleConfig
from pipeline.sample.level import (
    COMPILE_FROM_TOKENS,
    Conditioning,
    LevelSampler,
    Segment,
    SegmentWorker,
    load_prior,
    segment_windows,
    window_hop,
)
from pipeline.sample.models import ModelSet, condition_ids, resolve_models
from pipeline.services import runs_dir
from pipeline.train.vqvae_job import LEVEL_HOPS

log = logging.getLogger("jukebox.sample")
RATIO = {"middle": LEVEL_HOPS["top"] // LEVEL_HOPS["middle"], "bottom": LEVEL_HOPS["middle"] // LEVEL_HOPS["bottom"]}
# what may change between a run and its resumption without changing what it makes
RESUMABLE_FIELDS = ("out", "workers", "threads", "mlflow_tracking_uri", "experiment", "ray_address", "decode_levels")


def _save(path: Path, array: np.ndarray) -> None:
    """Atomically: a killed run leaves the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


class Progress:
    """A line every few seconds: windows done, tokens per second, time left (thread-safe)."""

    def __init__(self, level: str, windows: int, tokens: int, every_s: float = 5.0):
        self.level, self.windows, self.tokens, self.every = level, windows, tokens, every_s
        self.done_windows = self.done_tokens = 0
        self.started = self.last = time.time()
        self.lock = threading.Lock()

    def window(self, tokens: int) -> None:
        with self.lock:
            self.done_windows += 1
            self.done_tokens += tokens
            now = time.time()
            if now - self.last >= self.every or self.done_windows == self.windows:
                self.last = now
                rate = self.done_tokens / max(now - self.started, 1e-9)
                left = (self.tokens - self.done_tokens) / rate if rate else float("inf")
                print(f"[{self.level}] windows {self.done_windows}/{self.windows}, {rate:,.0f} tokens/s, ~{left:,.0f} s left",
                      flush=True)

    def rate(self) -> float:
        return self.done_tokens / max(time.time() - self.started, 1e-9)


# ---------------------------------------------------------------- the request

def _request(cfg: SampleConfig, models: ModelSet) -> dict[str, Any]:
    request = {k: v for k, v in flatten(cfg).items() if k not in RESUMABLE_FIELDS and not k.startswith("models.")}
    return {**request, "model_versions": models.versions()}


def claim_output(out: Path, request: dict[str, Any]) -> None:
    """A new folder gets the request; a folder with another request is refused, naming what differs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "request.json"
    if path.exists():
        before = json.loads(path.read_text())
        differs = sorted(k for k in set(before) | set(request) if before.get(k) != request.get(k))
        if differs:
            raise ConfigError(f"{out} holds another run (it differs in {', '.join(differs)}): use another --out, "
                              f"or the same settings to resume it")
        return
    path.write_text(json.dumps(request, indent=1, sort_keys=True))


# ---------------------------------------------------------------- codes in

def prime_codes(cfg: SampleConfig, models: ModelSet, device: str) -> dict[str, np.ndarray]:
    """The prompt's codes per sampled level (n_samples, tokens), from --prime or --top_codes."""
    levels = cfg.level_list()
    if cfg.top_codes:
        top = np.load(Path(cfg.top_codes).expanduser())
        top = np.broadcast_to(top if top.ndim == 2 else top[None], (cfg.n_samples, top.shape[-1]))
        return {"top": np.ascontiguousarray(top)}
    if not cfg.prime:
        return {}
    from pipeline.audio import decode
    from pipeline.codec import encode_audio
    from pipeline.registry import load_model

    audio = decode(cfg.prime, min_seconds=0.0, max_seconds=cfg.duration + 3600).samples.mean(axis=1, keepdims=True)
    keep = int(round(cfg.prime_seconds * models.sample_rate)) if cfg.prime_seconds else len(audio)
    keep = min(keep, len(audio)) // LEVEL_HOPS["top"] * LEVEL_HOPS["top"]  # whole top tokens: the levels line up
    if keep == 0 or keep >= round(cfg.duration * models.sample_rate):
        raise ConfigError(f"--prime gives {keep / models.sample_rate:.2f} s to keep; it must be > 0 and shorter "
                          f"than --duration ({cfg.duration} s)")
    out = {}
    for level in levels:
        vqvae, _ = load_model(models.vqvaes[level].uri, cfg.mlflow_tracking_uri or None)
        codes = encode_audio(vqvae.to(device), lambda lo, hi: audio[lo:hi], keep, device=device)
        out[level] = np.broadcast_to(codes[None], (cfg.n_samples, len(codes))).copy()
    return out


# ---------------------------------------------------------------- sampling a level

def _segments(level: str, total: int, known: np.ndarray | None, cfg: SampleConfig, sample_rate: int, out: Path,
              n_ctx: int) -> list[Segment]:
    if level == "top":
        bounds = [(0, total)]
    else:
        size = int(round(cfg.segment_seconds * sample_rate / LEVEL_HOPS[level]))
        size = max(n_ctx, size) // RATIO[level] * RATIO[level]
        bounds = [(s, min(s + size, total)) for s in range(0, total, size)]
    segments = []
    for i, (start, end) in enumerate(bounds):
        partial = out / "codes" / "partial" / f"{level}-{i:04d}.npy"
        if partial.exists():
            have = np.load(partial)  # a killed run's last finished window of this segment
        elif known is not None:
            have = known[:, start:min(end, known.shape[1])]
        else:
            have = np.zeros((cfg.n_samples, 0), dtype=np.int64)
        segments.append(Segment(level, i, start, end, have))
    return segments


def sample_level(level: str, cfg: SampleConfig, models: ModelSet, cond: Conditioning, total: int, known: np.ndarray | None,
                 upper: np.ndarray | None, out: Path, device: str, ray_workers: list | None) -> tuple[np.ndarray, dict]:
    reg = models.priors[level]
    n_ctx = int(reg.card["n_ctx"])
    compile_step = cfg.compile == "true" or (cfg.compile == "auto" and total >= COMPILE_FROM_TOKENS)
    ratio = RATIO.get(level, 1)
    args = (cfg.settings(level), cond, cfg.n_samples, cfg.seed, cfg.hop_fraction, compile_step, upper, ratio)
    segments = _segments(level, total, known, cfg, models.sample_rate, out, n_ctx)
    if ray_workers:
        import ray

        ray.get([w.prepare.remote(level, *args) for w in ray_workers])
        local = None
    else:
        local = LevelSampler(level, load_prior(str(reg.folder), reg.card, device, cfg.threads), *args)
    hop = window_hop(n_ctx, cfg.hop_fraction, ratio)
    todo = [(s, segment_windows(s, n_ctx, hop, ratio)) for s in segments]
    progress = Progress(level, sum(len(w) for _, w in todo), sum(s.end - s.start - s.known.shape[1] for s in segments))
    finished: dict[int, np.ndarray] = {s.index: s.known for s, w in todo if not w}

    def run(segment: Segment, chain) -> None:
        have = segment.known.shape[1]
        codes = segment.known
        for codes in chain:
            _save(out / "codes" / "partial" / f"{level}-{segment.index:04d}.npy", codes.astype(np.int16))
            progress.window(codes.shape[1] - have)
            have = codes.shape[1]
        finished[segment.index] = codes

    pending = [s for s, w in todo if w]
    started = time.time()
    if ray_workers:
        import ray

        def on_worker(i: int) -> None:
            for segment in pending[i::len(ray_workers)]:
                gen = ray_workers[i].sample.options(num_returns="streaming").remote(segment)
                run(segment, (ray.get(ref) for ref in gen))

        with ThreadPoolExecutor(len(ray_workers)) as pool:
            list(pool.map(on_worker, range(len(ray_workers))))
    else:
        for segment in pending:
            run(segment, local.sample(segment))
    codes = np.concatenate([finished[s.index] for s in segments], axis=1).astype(np.int16)
    assert codes.shape == (cfg.n_samples, total), (codes.shape, total)
    seconds = time.time() - started
    return codes, {f"{level}_tokens_per_s": progress.done_tokens / max(seconds, 1e-9), f"{level}_seconds": seconds,
                   f"{level}_windows": progress.done_windows, f"{level}_compiled": float(compile_step)}


# ---------------------------------------------------------------- the job

def _device(cfg: SampleConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no GPU here")
    return cfg.device


def sample(cfg: SampleConfig) -> dict[str, Any]:
    import torch

    from pipeline.data.lyrics import read_lyrics
    from pipeline.services import tracking_uri

    started = time.time()
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    tracking = tracking_uri(cfg.mlflow_tracking_uri or None)
    models = resolve_models(cfg, tracking)  # refuses an incompatible set, naming what differs
    top_card = (models.priors.get("top") or models.priors[cfg.level_list()[-1]]).card
    artist, genres = condition_ids(models.vocab, cfg.artist, cfg.genres(), top_card["config"]["n_artists"],
                                   top_card["config"]["n_genres"])
    from pipeline.train.sources import MAX_GENRES

    lyrics = read_lyrics(cfg.lyrics) if cfg.lyrics else ""
    total_samples = int(round(cfg.duration * models.sample_rate))
    tokens = {"top": -(-total_samples // LEVEL_HOPS["top"])}
    tokens["middle"], tokens["bottom"] = tokens["top"] * RATIO["middle"], tokens["top"] * RATIO["middle"] * RATIO["bottom"]
    cond = Conditioning(artist, (genres + [-1] * MAX_GENRES)[:MAX_GENRES], total_samples, lyrics)
    out = Path(cfg.out).expanduser().resolve() if cfg.out else runs_dir() / "samples" / "sample"
    device = _device(cfg)
    known = prime_codes(cfg, models, device)
    if cfg.top_codes and known["top"].shape[1] < tokens["top"]:
        raise ConfigError(f"--top_codes holds {known['top'].shape[1]} top tokens; {cfg.duration} s needs {tokens['top']}")
    claim_output(out, _request(cfg, models))
    print(f"sampling {cfg.n_samples} x {cfg.duration} s ({', '.join(f'{lv} {tokens[lv]} tokens' for lv in cfg.level_list())}) "
          f"into {out}", flush=True)

    with _ray_workers(cfg, models, tracking, device) as workers:
        codes, facts = _sample_levels(cfg, models, cond, tokens, known, out, device, workers)
    audio = decode_levels(cfg, models, codes, total_samples, out, device)
    alignment = lyrics_alignment(models, codes, cond, device, cfg.threads) if lyrics and "top" in models.priors else None
    from pipeline.sample.page import write_page

    page = write_page(out, cfg, models, audio, alignment, lyrics)
    summary = {"out": str(out), "page": str(page), "wavs": sorted(str(p) for p in audio.values()),
               "model_versions": models.versions(), "tokens": {lv: tokens[lv] for lv in cfg.level_list()}, **facts,
               "wall_seconds": round(time.time() - started, 1)}
    summary["mlflow_run_id"] = log_run(cfg, models, tracking, out, summary)
    return summary


def _sample_levels(cfg: SampleConfig, models: ModelSet, cond: Conditioning, tokens: dict[str, int], known: dict[str, np.ndarray],
                   out: Path, device: str, workers: list | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    codes: dict[str, np.ndarray] = {}
    facts: dict[str, float] = {}
    for level in cfg.level_list():
        path = out / "codes" / f"{level}.npy"
        if path.exists():
            codes[level] = np.load(path)
            continue
        if level == "top" and cfg.top_codes:
            codes[level] = known["top"][:, :tokens["top"]].astype(np.int16)
        else:
            upper = codes[{"middle": "top", "bottom": "middle"}[level]] if level != "top" else None
            codes[level], level_facts = sample_level(level, cfg, models, cond, tokens[level], known.get(level), upper, out,
                                                     device, workers if level != "top" else None)
            facts.update(level_facts)
        _save(path, codes[level])
    return codes, facts


@contextlib.contextmanager
def _ray_workers(cfg: SampleConfig, models: ModelSet, tracking: str, device: str):
    """The upsampling actors (none without --workers); an embedded Ray started here stops with them."""
    if not cfg.workers:
        yield None
        return
    import ray

    from pipeline.services import init_ray

    started_here = not ray.is_initialized()
    target = init_ray(cfg.ray_address or None, max(os.cpu_count() or 1, cfg.workers * cfg.threads), progress=False)
    actor = ray.remote(SegmentWorker).options(num_cpus=cfg.threads, num_gpus=1 if device == "cuda" else 0)
    uris = {level: reg.uri for level, reg in models.priors.items()}
    workers = [actor.remote(uris, tracking, device, cfg.threads) for _ in range(cfg.workers)]
    try:
        yield workers
    finally:
        for w in workers:
            ray.kill(w)
        if started_here and target == "local":
            ray.shutdown()


def decode_levels(cfg: SampleConfig, models: ModelSet, codes: dict[str, np.ndarray], total_samples: int, out: Path,
                  device: str) -> dict[tuple[str, int], Path]:
    """WAVs of each decoded level, exactly ``total_samples`` long."""
    import soundfile as sf

    from pipeline.codec import decode_codes
    from pipeline.registry import load_model

    wavs = {}
    for level in cfg.decode_list():
        vqvae, _ = load_model(models.vqvaes[level].uri, cfg.mlflow_tracking_uri or None)
        audio = decode_codes(vqvae.to(device), codes[level].astype(np.int64), device=device)[:, :total_samples]
        for i, wave in enumerate(audio):
            path = out / (f"sample-{i}.wav" if level == "bottom" else f"{level}/sample-{i}.wav")
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.clip(wave, -1.0, 1.0), models.sample_rate, subtype="PCM_16")
            wavs[(level, i)] = path
    return wavs


def lyrics_alignment(models: ModelSet, codes: dict[str, np.ndarray], cond: Conditioning, device: str,
                     threads: int) -> list[list[tuple[float, int]]]:
    """Per sample, (time in s, lyrics character) pairs: where the top prior's last encoder-decoder
    head looks while each top token plays (its attention's peak), window by window."""
    import torch

    from pipeline.sample.level import window_batch

    reg = models.priors["top"]
    prior = load_prior(str(reg.folder), reg.card, device, threads)
    pc, top = prior.cfg, codes["top"].astype(np.int64)
    n, total = top.shape
    out: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for start in range(0, total, pc.n_ctx):
        length = min(pc.n_ctx, total - start)
        batch, (lo, text) = window_batch(pc, cond, n, start, length)
        # the forward takes whole blocks; causal, so the padding changes nothing before it
        whole = -(-length // pc.transformer.block_len) * pc.transformer.block_len
        batch["codes"] = torch.from_numpy(np.pad(top[:, start:start + length], ((0, 0), (0, whole - length))))
        weights = prior.lyrics_attention({k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
        pad = pc.lyrics.encoder.n_ctx - len(text)  # lyrics_tokens pads on the left
        step = max(1, int(0.1 * models.sample_rate / pc.hop_length))  # a point every ~0.1 s
        for i in range(n):
            for t in range(0, length, step):
                char = int(weights[i, t].argmax()) - pad
                if 0 <= char < len(text):
                    out[i].append(((start + t) * pc.hop_length / models.sample_rate, lo + char))
    return out


def log_run(cfg: SampleConfig, models: ModelSet, tracking: str, out: Path, summary: dict[str, Any]) -> str:
    """An MLflow run naming the model versions, with the settings, speeds, WAVs, codes and page."""
    import mlflow
    from mlflow.entities import Metric, Param

    from pipeline.services import mlflow_experiment

    client = mlflow.MlflowClient(tracking_uri=tracking)
    run = client.create_run(mlflow_experiment(cfg.experiment, tracking), tags={"job": "sample", **models.versions()})
    rid = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(rid, params=[Param(k, str(v)[:500]) for k, v in flatten(cfg).items()],  # one call, not one per value
                     metrics=[Metric(k, float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))])
    for path in sorted(out.iterdir()):
        if path.name == "codes":  # the finished levels (the partial windows are only for resuming)
            for f in sorted(path.glob("*.npy")):
                client.log_artifact(rid, str(f), "codes")
        elif path.is_dir():
            client.log_artifacts(rid, str(path), path.name)
        else:
            client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FINISHED")
    return rid


def main_summary(cfg: SampleConfig) -> dict[str, Any]:
    summary = sample(cfg)
    print(json.dumps(summary, indent=1, default=str))
    return summary


__all__ = ["LEVELS", "sample", "main_summary"]
