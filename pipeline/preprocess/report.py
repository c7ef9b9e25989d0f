"""The corpus report (plots a person reads after a run) and the run's record in MLflow."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import flatten

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_report(songs: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Duration histogram, vocal-activity ratio and alignment coverage per song."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if not songs:
        return paths
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([s["duration_s"] for s in songs], bins=min(30, max(5, len(songs))), color="#4477aa")
    ax.set(xlabel="duration (s)", ylabel="songs", title=f"Song durations ({len(songs)} songs)")
    fig.tight_layout()
    paths.append(folder / "duration_histogram.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    shown = sorted(songs, key=lambda s: s["song_id"])[:60]  # a readable bar chart
    # a title is text, never maths: matplotlib would parse "$...$" and fail on what it cannot typeset
    labels = [(s["title"] or s["song_id"][:8])[:24].replace("$", r"\$") for s in shown]
    for column, title, colour in (("vocal_activity_ratio", "Vocal-activity ratio (share of frames with singing)", "#228833"),
                                  ("alignment_coverage", "Alignment coverage (share of word onsets on sung frames)", "#aa3377")):
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
        # by position: two songs with one title stay two bars
        ax.barh(range(len(shown)), [s[column] for s in shown], color=colour)
        ax.set_yticks(range(len(shown)), labels)
        ax.set(xlim=(0, 1), title=title)
        ax.invert_yaxis()
        fig.tight_layout()
        paths.append(folder / f"{column}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def _report_or_warning(songs: list[dict[str, Any]], folder: Path) -> list[Path]:
    """The plots, or a warning: the data is committed by now, and a plot must never fail the run."""
    try:
        return write_report(songs, folder)
    except Exception as exc:  # noqa: BLE001 - whatever a title or a value does to matplotlib
        plt.close("all")
        print(f"warning: the corpus report could not be drawn ({type(exc).__name__}: {str(exc)[:200]}); "
              "the shards and the summary are complete", flush=True)
        return []


def log_run(cfg, out: Path, summary: dict[str, Any], manifest_text: str, vocab: dict, songs: list[dict[str, Any]],
            outcomes: Path | None) -> str:
    """The run's record in MLflow; an unreachable server is waited out (``pipeline.tracking``)."""
    from pipeline.tracking import TrackedRun

    tags = {"output": str(out), "preprocess_run_id": summary["run_id"], "manifest_sha256": summary["manifest_sha256"],
            "vocab_version": str(summary["vocab_version"]), "separator": summary["separator"]["name"],
            "separator_version": summary["separator"]["version"]}
    with TrackedRun.open(cfg.experiment, f"preprocess-{summary['run_id']}", cfg.mlflow_tracking_uri, tags=tags) as run:
        run.params(flatten(cfg))
        run.metrics({**{k: float(summary[k]) for k in ("inputs", "ok", "quarantined", "skipped_existing", "audio_seconds",
                                                       "wall_seconds", "pipeline_seconds", "realtime_factor", "songs_total")},
                     **{f"aligned_by_{m}": float(n) for m, n in summary["alignment_methods"].items() if m}})
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "summary.json").write_text(json.dumps(summary, indent=1))
            (t / "manifest.json").write_text(manifest_text)
            (t / f"vocab-v{summary['vocab_version']}.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1))
            if outcomes is not None:
                shutil.copyfile(outcomes, t / "inputs.parquet")
            report = _report_or_warning(songs, t / "report")
            if songs:
                pq.write_table(pa.Table.from_pylist(songs), t / "report" / "songs.parquet")
            for f in sorted(t.glob("*")):
                if f.is_file():
                    run.artifact(f)
            if report:
                run.artifacts(t / "report", "report")
    return run.run_id
