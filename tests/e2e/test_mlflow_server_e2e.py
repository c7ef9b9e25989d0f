"""The production tracking server, for real: PostgreSQL for runs and the registry, artefacts
through the server into an S3 API, and MLflow's basic-auth login (infra/mlflow/server.sh).

No MinIO server installs here: the S3 API is moto's server mode on 127.0.0.1, the stand-in for
MinIO or S3 (the server talks to it through boto3, as it would to either). Every process runs
on 127.0.0.1 and is stopped by its PID at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from processes import stop

from pipeline.services import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "correct-horse-battery-staple"  # noqa: S105 - a test's own server
TRAINER, TRAINER_PASSWORD = "trainer", "trainer-password-42"
OTHER, OTHER_PASSWORD = "other", "other-password-42"


@contextlib.contextmanager
def logged_in(user: str, password: str):
    """MLflow's client login, as a job reads it, for the duration of a block."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    os.environ.update(zip(keys, (user, password), strict=True))
    try:
        yield
    finally:
        for key in keys:
            del os.environ[key]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is missing: ./dev.sh setup installs postgresql")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres account the package made."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    import tempfile

    # not under pytest's folder: as root that is 0700 root, which the postgres account cannot enter
    folder = Path(tempfile.mkdtemp(prefix="jukebox-postgres-"))
    data, pwfile = folder / "data", folder / "pw"
    pwfile.write_text("pg-secret-password\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                                 f"--pwfile={pwfile}"]), check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(_as_postgres([_pg_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                          "-k", str(folder)]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    env = {**os.environ, "PGPASSWORD": "pg-secret-password"}
    deadline = time.time() + 60
    while subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode:
        assert time.time() < deadline and proc.poll() is None, "postgres did not start"
        time.sleep(0.3)
    subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"], env=env, check=True)
    yield f"postgresql://postgres:pg-secret-password@127.0.0.1:{port}/mlflow"
    stop(proc)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    deadline = time.time() + 60
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                         region_name="us-east-1").create_bucket(Bucket="mlflow-artifacts")
            break
        except Exception:  # noqa: BLE001 - not up yet
            assert time.time() < deadline and proc.poll() is None, "the S3 server did not start"
            time.sleep(0.3)
    yield endpoint, env
    stop(proc)


@pytest.fixture(scope="module")
def server(postgres, s3, tmp_path_factory):
    endpoint, s3_env = s3
    port = free_port()
    env = {**os.environ, **s3_env, "MLFLOW_BACKEND_STORE_URI": postgres, "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts/mlflow",
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_PORT": str(port),
           "MLFLOW_ROOT": str(tmp_path_factory.mktemp("mlflow-production"))}
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", str(ROOT / "infra" / "mlflow" / "server.sh")], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    from mlflow.server.auth.client import AuthServiceClient

    with logged_in("admin", ADMIN_PASSWORD):
        admin = AuthServiceClient(url)
        admin.create_user(TRAINER, TRAINER_PASSWORD)
        admin.create_user(OTHER, OTHER_PASSWORD)
    yield {"url": url, "log": log, "endpoint": endpoint, "s3_env": s3_env}
    stop(proc)
    assert ADMIN_PASSWORD not in log.read_text()  # nothing secret printed


def _status(url: str, user: str = "", password: str = "") -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if user:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_call_needs_a_login(server):
    assert _status(server["url"]) == 401
    assert _status(server["url"], "admin", "wrong-password") == 401
    assert _status(server["url"], TRAINER, TRAINER_PASSWORD) == 200


def test_the_pipeline_job_submitted_to_a_token_auth_head_trains_and_registers_through_it(server, tmp_path):
    """As on a cluster: the head is started with the tracking server and its login in its environment,
    and `ray job submit` runs the pipeline job (preprocessing, the top VQ-VAE): every run, artefact and
    registration goes through the server, with the head's credentials; the client passes none."""
    import boto3
    import mlflow
    from processes import RayHead, job_succeeded

    from pipeline.demo_corpus import make_demo_corpus
    from pipeline.registry import download

    creds = {"MLFLOW_TRACKING_USERNAME": TRAINER, "MLFLOW_TRACKING_PASSWORD": TRAINER_PASSWORD}
    manifest = make_demo_corpus(tmp_path / "corpus", songs=2, seconds=6.0, seed=3)
    head = RayHead(tmp_path, free_port(), free_port(), free_port(), extra={"MLFLOW_TRACKING_URI": server["url"], **creds})
    try:
        assert head.wait_for_api() == 401
        proc = head.submit("jobs/pipeline.py", "--config", "infra/pipeline/demo.yaml", "--input", str(manifest), "--output",
                           str(tmp_path / "run"), "--only", "preprocess,vqvae.top", "--vqvae.top.runtime.total_steps", "2",
                           "--vqvae.top.checkpoint.every", "2")
        job_succeeded(proc)
        assert TRAINER_PASSWORD not in proc.stdout + proc.stderr + head.log.read_text()
    finally:
        head.stop()
    # the weights went through the server into the S3 store
    s3 = boto3.client("s3", endpoint_url=server["endpoint"], aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts", MaxKeys=1000).get("Contents", [])]
    assert any(k.endswith("model/card.json") for k in keys) and any(k.endswith(".safetensors") for k in keys), keys
    # the sampler's first step: resolve the alias, download and verify the files, as the trainer
    with logged_in(TRAINER, TRAINER_PASSWORD):
        reg = download("models:/jukebox-vqvae-top@current", tmp_path / "cache", server["url"])
        assert reg.card["family"] == "vqvae" and (reg.folder / "card.json").exists()
    # another user may read it (READ by default) but not move the alias training and sampling load
    with logged_in(OTHER, OTHER_PASSWORD):
        other = mlflow.MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])
        assert other.get_model_version_by_alias("jukebox-vqvae-top", "current").version == reg.version
        with pytest.raises(mlflow.exceptions.MlflowException, match="PERMISSION_DENIED|Permission denied|403"):
            other.set_registered_model_alias("jukebox-vqvae-top", "current", reg.version)


def test_the_launchers_refuse_an_open_or_guessable_server(tmp_path):
    base = {**os.environ, "MLFLOW_BACKEND_STORE_URI": "postgresql://u:p@127.0.0.1:1/x", "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a"),
            "MLFLOW_ROOT": str(tmp_path / "root")}
    server_sh = ["bash", str(ROOT / "infra" / "mlflow" / "server.sh")]
    for env, words in ((base, "MLFLOW_AUTH_ADMIN_PASSWORD"), ({**base, "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "well-known"),
                       ({**base, "MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "12 characters"),
                       ({**base, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_HOST": "0.0.0.0"}, "MLFLOW_ALLOWED_HOSTS")):
        proc = subprocess.run(server_sh, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and words in proc.stderr, proc.stderr
        assert ADMIN_PASSWORD not in proc.stdout + proc.stderr
    simple = ["bash", str(ROOT / "infra" / "mlflow-server.sh")]
    proc = subprocess.run(simple, env={**os.environ, "MLFLOW_HOST": "0.0.0.0", "MLFLOW_ROOT": str(tmp_path / "open")},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "basic-auth" in proc.stderr and not (tmp_path / "open").exists()
    # extra flags reach mlflow server (here --help, which exits at once); the data folder is owner-only
    proc = subprocess.run([*simple, "--help"], env={**os.environ, "MLFLOW_ROOT": str(tmp_path / "mine")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--app-name" in proc.stdout
    assert (tmp_path / "mine").stat().st_mode & 0o077 == 0
