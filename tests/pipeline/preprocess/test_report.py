"""The corpus report: song titles are text, and a report that cannot be drawn never fails a committed run."""

from __future__ import annotations

import pytest

from pipeline.preprocess import report


def _song(i: int, title: str) -> dict:
    return {"song_id": f"{i:032x}", "title": title, "duration_s": 30.0 + i, "vocal_activity_ratio": 0.5,
            "alignment_coverage": 0.8}


def test_titles_matplotlib_would_read_as_maths_are_drawn_as_text(tmp_path):
    songs = [_song(0, r"$\x$"), _song(1, r"\frac{ $a^"), _song(2, "same"), _song(3, "same")]
    paths = report.write_report(songs, tmp_path)
    assert [p.name for p in paths] == ["duration_histogram.png", "vocal_activity_ratio.png", "alignment_coverage.png"]


def test_a_plot_that_fails_costs_a_warning_not_the_run(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("matplotlib could not draw it")

    monkeypatch.setattr(report, "write_report", broken)
    assert report._report_or_warning([_song(0, "x")], tmp_path) == []
    assert "warning: the corpus report could not be drawn" in capsys.readouterr().out


def test_before_the_fix_a_maths_title_raised(tmp_path):
    """What the escaping prevents: the same title unescaped fails inside matplotlib."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_yticks([0], [r"$\x$"])
    with pytest.raises(ValueError):
        fig.savefig(tmp_path / "x.png")
    plt.close(fig)
