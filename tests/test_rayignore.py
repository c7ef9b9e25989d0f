"""`ray job submit --working-dir .` uploads the checkout: never its secrets, stores or environments."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEVER = [".git/config", ".env", ".env.production", "deploy/server.pem", "deploy/tls.key", "ray_token", "ray-auth-token.txt",
         ".netrc", "mlruns/0/meta.yaml", "mlartifacts/1/a/model.safetensors", "runs/mlflow.db", "mlflow.db", "cache.sqlite",
         ".venv/bin/python", ".venv-spleeter/bin/python", "runs/train/ckpt.pt"]
ALWAYS = ["jobs/pipeline.py", "pipeline/__init__.py", "infra/pipeline/demo.yaml", "README.md", "pyproject.toml"]


def test_ray_s_own_walk_leaves_out_every_secret_and_store(tmp_path):
    from ray._private.runtime_env.packaging import _dir_travel, get_excludes_from_ignore_files

    shutil.copy(ROOT / ".rayignore", tmp_path / ".rayignore")
    for rel in NEVER + ALWAYS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    uploaded: list[str] = []
    excludes = get_excludes_from_ignore_files(tmp_path, include_gitignore=False)  # .rayignore alone must do it
    _dir_travel(tmp_path, excludes, lambda p: uploaded.append(p.relative_to(tmp_path).as_posix()) if p.is_file() else None,
                include_gitignore=False)
    assert not set(uploaded) & set(NEVER), sorted(set(uploaded) & set(NEVER))
    assert set(ALWAYS) <= set(uploaded)


def test_no_file_of_the_project_is_left_out():
    import subprocess

    from ray._private.runtime_env.packaging import get_excludes_from_ignore_files

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    excluded = get_excludes_from_ignore_files(ROOT, include_gitignore=False)[0]
    assert not [f for f in tracked if excluded(ROOT / f)]
