"""Separation speed and quality: the DSP separator vs a Spleeter model, on held-out synthetic
songs (20 s each), real-time factor per core with the model load excluded and included.

    python bench/bench_separation.py --model <spleeter model folder> [--songs 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import save  # noqa: E402
from pipeline.preprocess.report import format_table  # noqa: E402
from pipeline.separate.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--songs", type=int, default=3)
    args = ap.parse_args()
    rows = evaluate(args.model, songs=args.songs, seconds=20.0)
    table = []
    for name in ("dsp", "spleeter"):
        mine = [r for r in rows if r["separator"] == name]
        audio, cpu, load = sum(r["audio_s"] for r in mine), sum(r["cpu_s"] for r in mine), mine[0]["load_cpu_s"]
        table.append([name, len(mine), round(sum(r["si_sdr_db"] for r in mine) / len(mine), 2),
                      round(sum(r["mixture_floor_db"] for r in mine) / len(mine), 2), round(load, 2),
                      round(audio / cpu, 1), round(audio / (cpu + load), 1)])
    print(format_table(["separator", "songs", "vocals SI-SDR dB", "mixture floor dB", "load CPU s", "RTF/core (load excluded)",
                        "RTF/core (load included)"], table))
    print(save("separation", {"rows": rows}))


if __name__ == "__main__":
    main()
