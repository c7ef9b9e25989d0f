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
def realdata():
    if not (REALDATA / "JamendoLyrics.csv").exists():
        pytest.skip(f"shared real songs not found at {REALDATA} (they are not part of a clone)")
    return REALDATA
