"""Score aligners on songs with hand-annotated word onsets (the JamendoLyrics layout).

    python -m pipeline.align.evaluate <folder> [--aligners linear,vocal_activity,tts_dtw,auto]
                                                [--ctc-model PATH] [--separator dsp|spleeter] [--json out.json]

The folder holds ``JamendoLyrics.csv``, ``mp3/``, ``lyrics/<song>.txt`` and
``annotations/words/<song>.csv``. Each song is decoded, separated (DSP) and aligned by the
same code the preprocessing job runs; metrics are on word onsets (MIREX): average
absolute error (AAE), median absolute error, and the share within 0.3 s and 1 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.align import Aligner, AlignInput, build_aligner
from pipeline.audio import decode
from pipeline.data.lyrics import read_lyrics
from pipeline.separate import build_separator
from pipeline.separate.activity import detect_vocal_activity
from pipeline.tables import format_table


def word_onset_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.abs(np.asarray(predicted, dtype=np.float64) - truth)
    return {"aae_s": float(err.mean()), "median_ae_s": float(np.median(err)),
            "within_0.3s": float((err <= 0.3).mean()), "within_1s": float((err <= 1.0).mean())}


@dataclass
class EvalSong:
    name: str
    item: AlignInput
    truth: np.ndarray  # annotated word onsets, seconds
    separation_cpu_s: float


def load_songs(folder: Path, separator: str = "dsp", separator_model: str = "") -> list[EvalSong]:
    """Decode, separate and detect vocal activity once per song, as the preprocessing job does."""
    with open(folder / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        metas = list(csv.DictReader(fh))
    sep = build_separator(separator, **({"model": separator_model} if separator_model else {}))
    sep.load()
    songs = []
    for meta in metas:
        stem = Path(meta["Filepath"]).stem
        with open(folder / "annotations" / "words" / f"{stem}.csv", newline="") as fh:
            truth = np.array([float(r["word_start"]) for r in csv.DictReader(fh)])
        lyrics = read_lyrics(str(folder / "lyrics" / f"{stem}.txt"))
        audio = folder / "mp3" / meta["Filepath"]
        mix = decode(audio if audio.exists() else folder / meta["Filepath"], 0, 3600).samples
        t0 = time.process_time()
        stems = sep.separate(mix, 44100)
        activity = detect_vocal_activity(stems.vocals, mix, 44100)
        item = AlignInput(lyrics, len(mix) / 44100, 44100, meta.get("Language") or None, mix, stems.vocals, activity)
        songs.append(EvalSong(stem, item, truth, time.process_time() - t0))
    return songs


def _cpu_s() -> float:
    """CPU of this process and its finished children (the espeak-ng helper runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def score(song: EvalSong, aligner: Aligner, label: str | None = None) -> dict:
    t0, w0 = _cpu_s(), time.perf_counter()
    al = aligner.align(song.item)
    cpu, wall = _cpu_s() - t0, time.perf_counter() - w0
    if len(al.word_onsets) != len(song.truth):
        raise ValueError(f"{song.name}: {len(al.word_onsets)} words in the lyrics, {len(song.truth)} annotated")
    return {"song": song.name, "aligner": label or aligner.name, "method": al.method, "notes": al.notes, "cpu_s": cpu,
            "wall_s": wall, "confidence": al.confidence, "separation_cpu_s": song.separation_cpu_s,
            "duration_s": song.item.duration_s, **word_onset_metrics(al.word_onsets, song.truth)}


def evaluate(folder: Path, aligners: list[str], separator: str = "dsp", ctc_model: str = "", separator_model: str = "") -> list[dict]:
    songs = load_songs(folder, separator, separator_model)
    built = {name: build_aligner(name, ctc_model=ctc_model) for name in aligners}
    return [score(song, built[name], name) for song in songs for name in aligners]


def summary_rows(results: list[dict]) -> list[list]:
    """Per song and mean rows for ``format_table`` with ``SUMMARY_HEADER``."""
    rows = [[r["song"][:28], r["aligner"], round(r["aae_s"], 2), round(r["median_ae_s"], 2), f"{r['within_0.3s']:.0%}",
             f"{r['within_1s']:.0%}", round(r["cpu_s"], 2), round(r["cpu_s"] * 180 / r["duration_s"], 2),
             round(r["confidence"], 2)] for r in results]
    for name in dict.fromkeys(r["aligner"] for r in results):
        mine = [r for r in results if r["aligner"] == name]
        rows.append(["MEAN", name] + [round(float(np.mean([r[k] for r in mine])), 2) for k in ("aae_s", "median_ae_s")]
                    + [f"{np.mean([r[k] for r in mine]):.0%}" for k in ("within_0.3s", "within_1s")]
                    + [round(float(np.mean([r["cpu_s"] for r in mine])), 2),
                       round(float(np.mean([r["cpu_s"] * 180 / r["duration_s"] for r in mine])), 2),
                       round(float(np.mean([r["confidence"] for r in mine])), 2)])
    return rows


SUMMARY_HEADER = ["song", "aligner", "AAE s", "median AE s", "<= 0.3 s", "<= 1 s", "align CPU s", "CPU s per 3 min", "confidence"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--aligners", default="linear,vocal_activity,tts_dtw")
    ap.add_argument("--ctc-model", default="", help="CTC checkpoint (folder or hub id) for the ctc aligner")
    ap.add_argument("--separator", default="dsp", choices=["dsp", "spleeter"])
    ap.add_argument("--separator-model", default="", help="Spleeter model folder (with --separator spleeter)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = [a for a in args.aligners.split(",") if a]
    results = evaluate(args.folder, names, args.separator, args.ctc_model, args.separator_model)
    print(format_table(SUMMARY_HEADER, summary_rows(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
