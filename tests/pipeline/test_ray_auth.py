"""The Ray token file and environment (pipeline/ray_auth.py); the cluster itself is tested in
tests/e2e/test_preprocess_e2e.py (infra/ray-head.sh) and tests/e2e/test_train_vqvae_e2e.py (embedded)."""

import os
import subprocess
import sys

import pytest

from pipeline import ray_auth


def test_token_is_made_once_with_mode_0600_and_only_its_path_is_printed(tmp_path):
    path = tmp_path / "deep" / "auth_token"
    proc = subprocess.run([sys.executable, "-m", "pipeline.ray_auth", "token"], capture_output=True, text=True, check=True,
                          env={**os.environ, "RAY_AUTH_TOKEN_PATH": str(path)})
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits of hex
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o077 == 0
    assert proc.stdout.strip() == str(path) and token not in proc.stdout + proc.stderr
    assert ray_auth.ensure_token(path) == path and path.read_text() == token  # kept, not regenerated


def test_a_readable_token_is_narrowed_and_a_bad_one_refused(tmp_path, caplog):
    path = tmp_path / "auth_token"
    path.write_text("s3cret-token-value")
    path.chmod(0o644)  # what Ray's own generator leaves under the usual umask
    ray_auth.ensure_token(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "narrowed to 0600" in caplog.text and "s3cret" not in caplog.text
    path.write_text("  \n")
    with pytest.raises(RuntimeError, match="empty"):
        ray_auth.ensure_token(path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RuntimeError, match="not a regular file"):
        ray_auth.ensure_token(fifo)


def test_environment_turns_auth_on_and_keeps_loopback(tmp_path, monkeypatch):
    for name in (ray_auth.AUTH_MODE, ray_auth.TOKEN_VALUE, ray_auth.LOOPBACK_ONLY):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ray_auth.TOKEN_PATH, str(tmp_path / "t"))
    ray_auth.secure_ray_environment("local")
    assert os.environ[ray_auth.AUTH_MODE] == "token" and (tmp_path / "t").exists()
    assert os.environ[ray_auth.LOOPBACK_ONLY] == "0"
    # a client never makes up a token for a cluster, and dials a remote head by its address
    monkeypatch.delenv(ray_auth.LOOPBACK_ONLY)
    monkeypatch.setenv(ray_auth.TOKEN_PATH, str(tmp_path / "missing"))
    ray_auth.secure_ray_environment("10.1.2.3:6379")
    assert not (tmp_path / "missing").exists() and ray_auth.LOOPBACK_ONLY not in os.environ
    ray_auth.secure_ray_environment("ray://127.0.0.1:10001")
    assert os.environ[ray_auth.LOOPBACK_ONLY] == "0"
    # an explicit opt-out is the user's to make
    monkeypatch.setenv(ray_auth.AUTH_MODE, "disabled")
    monkeypatch.setenv(ray_auth.TOKEN_PATH, str(tmp_path / "u"))
    ray_auth.secure_ray_environment("local")
    assert not (tmp_path / "u").exists()
