"""The corpus report: plots and a table a person reads after a run (logged to MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

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
    labels = [(s["title"] or s["song_id"][:8])[:24] for s in shown]
    for column, title, colour in (("vocal_activity_ratio", "Vocal-activity ratio (share of frames with singing)", "#228833"),
                                  ("alignment_coverage", "Alignment coverage (share of word onsets on sung frames)", "#aa3377")):
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
        ax.barh(labels, [s[column] for s in shown], color=colour)
        ax.set(xlim=(0, 1), title=title)
        ax.invert_yaxis()
        fig.tight_layout()
        paths.append(folder / f"{column}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


