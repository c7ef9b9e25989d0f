"""Separation quality on held-out synthetic songs with known stems: SI-SDR of the vocal stem,
next to the floor of returning the mixture unchanged.

    python -m pipeline.separate.evaluate [--model <spleeter model folder>] [--songs 3] [--json out.json]

The DSP separator runs here; Spleeter runs in its own environment (a subprocess of its
python running this same module), on the same songs. The songs come from the demo
generator with a seed no separator was trained or tuned on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

HELD_OUT_SEED = 999


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref.ravel().astype(np.float64), est.ravel().astype(np.float64)
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))


def make_songs(folder: Path, songs: int, seconds: float) -> list[Path]:
    from pipeline.demo_corpus import synth_song

    rng = np.random.default_rng(HELD_OUT_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(songs):
        acc, voc, *_ = synth_song(seconds, 44100, rng, int(seconds * 1.2))
        sf.write(folder / f"{i}.mix.wav", np.clip(acc + voc, -1, 1), 44100, subtype="FLOAT")
        sf.write(folder / f"{i}.vocals.wav", voc, 44100, subtype="FLOAT")
        paths.append(folder / f"{i}.mix.wav")
    return paths


def score(separator: str, model: str, mixes: list[Path]) -> list[dict]:
    from pipeline.separate import build_separator

    sep = build_separator(separator, **({"model": model} if separator == "spleeter" else {}))
    t0 = time.process_time()
    sep.load()
    load_cpu = time.process_time() - t0
    rows = []
    for mix_path in mixes:
        mix, _ = sf.read(mix_path, dtype="float32", always_2d=True)
        vocals, _ = sf.read(str(mix_path).replace(".mix.", ".vocals."), dtype="float32", always_2d=True)
        t0 = time.process_time()
        est = sep.separate(mix, 44100).vocals
        cpu = time.process_time() - t0
        rows.append({"song": mix_path.stem, "separator": separator, "si_sdr_db": si_sdr(vocals, est),
                     "mixture_floor_db": si_sdr(vocals, mix), "cpu_s": cpu, "audio_s": len(mix) / 44100,
                     "load_cpu_s": load_cpu})
    return rows


def evaluate(model: str = "", songs: int = 3, seconds: float = 20.0, spleeter_python: str = "") -> list[dict]:
    from pipeline.separate.choose import default_spleeter_python

    with tempfile.TemporaryDirectory() as tmp:
        mixes = make_songs(Path(tmp), songs, seconds)
        rows = score("dsp", "", mixes)
        if model:
            out = Path(tmp) / "spleeter.json"
            cmd = [spleeter_python or str(default_spleeter_python()), "-m", "pipeline.separate.evaluate", "--_score-spleeter",
                   model, "--_mixes", ",".join(map(str, mixes)), "--json", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
            if proc.returncode:
                raise RuntimeError(f"Spleeter evaluation failed:\n{proc.stderr[-3000:]}")
            rows += json.loads(out.read_text())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="Spleeter model folder to score next to the DSP separator")
    ap.add_argument("--songs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--_score-spleeter", dest="score_spleeter", help=argparse.SUPPRESS)
    ap.add_argument("--_mixes", dest="mixes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.score_spleeter:  # inside the Spleeter environment
        rows = score("spleeter", args.score_spleeter, [Path(p) for p in args.mixes.split(",")])
        args.json.write_text(json.dumps(rows))
        return
    rows = evaluate(args.model, args.songs, args.seconds)
    from pipeline.tables import format_table

    table = [[r["song"], r["separator"], round(r["si_sdr_db"], 2), round(r["mixture_floor_db"], 2),
              round(r["si_sdr_db"] - r["mixture_floor_db"], 2), round(r["audio_s"] / r["cpu_s"], 1)] for r in rows]
    print(format_table(["song", "separator", "vocals SI-SDR dB", "mixture floor dB", "gain dB", "RTF per core"], table))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
