"""What a user reads holds: every link in every Markdown file resolves (files and headings), and
neither the docs nor a job's --help speak of development history or of paths a user lacks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HISTORY = re.compile(r"\b(this|last|next) (stop|issue)\b|\bissue \d+\b|\.\./shared/|\bstop \d+\b", re.IGNORECASE)


def markdown_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return sorted({ROOT / p for p in tracked} | set(ROOT.glob("docs/*.md")) | {ROOT / "README.md", ROOT / "bench" / "README.md"})


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # the network is not this test's to reach
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(path):
    assert not broken_links(path)


def test_the_link_checker_sees_a_broken_file_and_a_broken_heading(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title here\n[ok](#title-here) [gone](missing.md) [bad](#no-such) [web](https://example.org)\n")
    assert broken_links(page) == ["missing.md (no such file)", "#no-such (no such heading)"]


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "./dev.sh demo" in readme and "./dev.sh test" in readme


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history_or_private_paths_in_the_docs(path):
    assert not [m.group(0) for m in HISTORY.finditer(path.read_text())]


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.py")))
def test_no_development_history_in_a_jobs_help(job):
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / job), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-1000:]
    assert not [m.group(0) for m in HISTORY.finditer(done.stdout)]
