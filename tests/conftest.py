import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import REALDATA  # noqa: E402


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from pipeline.demo_corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo"), songs=4, seconds=12.0, seed=3)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory, demo_corpus):
    """The demo corpus preprocessed once (linear alignment: fast) for every training test."""
    import subprocess

    out = tmp_path_factory.mktemp("demo-shards")
    subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--input", str(demo_corpus), "--output", str(out),
                    "--progress", "false", "--align.aligner", "linear", "--mlflow_tracking_uri", f"sqlite:///{out / 'm.db'}"],
                   check=True, cwd=ROOT, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def realdata():
    if not (REALDATA / "JamendoLyrics.csv").exists():
        pytest.skip(f"shared real songs not found at {REALDATA} (they are not part of a clone)")
    return REALDATA
