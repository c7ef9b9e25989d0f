"""Score aligners on songs with hand-annotated word onsets (the JamendoLyrics layout).

    python -m pipeline.align.evaluate <folder> [--aligners linear,vocal_activity] [--json out.json]

The folder holds ``JamendoLyrics.csv``, ``mp3/``, ``lyrics/<song>.txt`` and
``annotations/words/<song>.csv``. Each song is decoded, separated (DSP) and aligned by the
same code the preprocessing job runs; metrics are on word onsets (MIREX): average
absolute error (AAE), median absolute error, and the share within 0.3 s and 1 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from pipeline.align import AlignInput, build_aligner
from pipeline.audio import decode
from pipeline.preprocess.ingest import read_lyrics
from pipeline.preprocess.report import format_table
from pipeline.separate import build_separator
from pipeline.separate.activity import detect_vocal_activity


def word_onset_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.abs(np.asarray(predicted, dtype=np.float64) - truth)
    return {"aae_s": float(err.mean()), "median_ae_s": float(np.median(err)),
            "within_0.3s": float((err <= 0.3).mean()), "within_1s": float((err <= 1.0).mean())}


def evaluate(folder: Path, aligners: list[str], separator: str = "dsp") -> list[dict]:
    with open(folder / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        songs = list(csv.DictReader(fh))
    sep = build_separator(separator)
    results = []
    for meta in songs:
        stem = Path(meta["Filepath"]).stem
        with open(folder / "annotations" / "words" / f"{stem}.csv", newline="") as fh:
            truth = np.array([float(r["word_start"]) for r in csv.DictReader(fh)])
        lyrics = read_lyrics(str(folder / "lyrics" / f"{stem}.txt"))
        audio = folder / "mp3" / meta["Filepath"]
        mix = decode(audio if audio.exists() else folder / meta["Filepath"], 0, 3600).samples
        t0 = time.process_time()
        stems = sep.separate(mix, 44100)
        activity = detect_vocal_activity(stems.vocals, mix, 44100)
        separation_s = time.process_time() - t0
        item = AlignInput(lyrics, len(mix) / 44100, 44100, meta.get("Language"), mix, stems.vocals, activity)
        for name in aligners:
            t0 = time.process_time()
            al = build_aligner(name).align(item)
            cpu = time.process_time() - t0
            if len(al.word_onsets) != len(truth):
                raise ValueError(f"{stem}: {len(al.word_onsets)} words in the lyrics, {len(truth)} annotated")
            results.append({"song": stem, "aligner": name, "method": al.method, "cpu_s": cpu, "separation_cpu_s": separation_s,
                            "duration_s": len(mix) / 44100, **word_onset_metrics(al.word_onsets, truth)})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--aligners", default="linear,vocal_activity")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = [a for a in args.aligners.split(",") if a]
    results = evaluate(args.folder, names)
    rows = [[r["song"][:28], r["aligner"], round(r["aae_s"], 2), round(r["median_ae_s"], 2), f"{r['within_0.3s']:.0%}",
             f"{r['within_1s']:.0%}", round(r["cpu_s"], 3)] for r in results]
    for name in names:
        mine = [r for r in results if r["aligner"] == name]
        rows.append(["MEAN", name, round(np.mean([r["aae_s"] for r in mine]), 2), round(np.mean([r["median_ae_s"] for r in mine]), 2),
                     f"{np.mean([r['within_0.3s'] for r in mine]):.0%}", f"{np.mean([r['within_1s'] for r in mine]):.0%}",
                     round(np.mean([r["cpu_s"] for r in mine]), 3)])
    print(format_table(["song", "aligner", "AAE s", "median AE s", "<= 0.3 s", "<= 1 s", "align CPU s"], rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
