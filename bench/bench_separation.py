"""Separation speed and quality: the DSP separator vs a Spleeter model, on held-out synthetic
songs (20 s each), real-time factor per core with the model load excluded and included;
with --pipeline-manifest, also the whole preprocessing job with each separator.

    python bench/bench_separation.py --model <spleeter model folder> [--songs 3] [--pipeline-manifest m.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import save  # noqa: E402
from pipeline.separate.evaluate import evaluate  # noqa: E402
from pipeline.tables import format_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--songs", type=int, default=3)
    ap.add_argument("--pipeline-manifest", help="also run the preprocessing job on this corpus with each separator")
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
    pipeline = pipeline_throughput(args.pipeline_manifest, args.model) if args.pipeline_manifest else []
    print(save("separation", {"rows": rows, "pipeline": pipeline}))


def pipeline_throughput(manifest: str, model: str) -> list[dict]:
    """The real job, once per separator, into fresh outputs; phases come from its summary."""
    import tempfile

    from pipeline.preprocess.config import PreprocessConfig, SeparateConfig
    from pipeline.preprocess.run import run_preprocess

    results, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sep in (("dsp", SeparateConfig()), ("spleeter", SeparateConfig(model=str(Path(model).resolve())))):
            cfg = PreprocessConfig(input=manifest, output=f"{tmp}/{name}", progress=False, separate=sep,
                                   mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
            s = run_preprocess(cfg)
            p = s["phases"]["pipeline"]
            results.append({"separator": name, "audio_s": s["audio_seconds"], "phases": s["phases"]})
            table.append([name, s["audio_seconds"], p["wall_s"], p["machine_cpu_s"], round(s["audio_seconds"] / p["wall_s"], 1),
                          round(s["audio_seconds"] / p["machine_cpu_s"], 1), s["phases"]["separator_preflight"]["wall_s"]])
    print(format_table(["separator", "audio s", "pipeline wall s", "machine CPU s", "RTF (wall)", "RTF per core", "preflight s"],
                       table))
    return results


if __name__ == "__main__":
    main()
