"""What a process tree exposes, for the tests that check services stay private."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def listening_addresses(pid: int) -> set[str]:
    """The IP addresses that process ``pid`` and its descendants accept TCP connections on."""
    import psutil

    root = psutil.Process(pid)
    addresses = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            addresses |= {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:  # a process that ended while we looked
            pass
    return addresses


def all_loopback(addresses: set[str]) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a.removeprefix("::ffff:")).is_loopback for a in addresses)


def start_mlflow(root: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` (``infra/mlflow-server.sh``) on 127.0.0.1:``port``, once it answers."""
    proc = subprocess.Popen(["bash", str(ROOT / "infra" / "mlflow-server.sh")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_ROOT": str(root), "MLFLOW_PORT": str(port)})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError("mlflow server did not start")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, by its process group."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


PEAK_RSS_MARK = "peak_rss_mb="


def run_with_peak_rss(script: Path, args: list[str], env: dict | None = None,
                      timeout: int = 1800) -> tuple[subprocess.CompletedProcess, float]:
    """Run a job script in a fresh interpreter that prints its own peak RSS (the driver's, not Ray's
    worker processes') as it exits; -> (the process, the peak in MB)."""
    import sys

    code = ("import resource, runpy, sys\n"
            f"sys.argv = [{str(script)!r}, *sys.argv[1:]]\n"
            "code = 0\n"
            "try:\n"
            f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    code = exc.code or 0\n"
            f"print({PEAK_RSS_MARK!r} + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), flush=True)\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    marks = [line for line in proc.stdout.splitlines() if line.startswith(PEAK_RSS_MARK)]
    return proc, float(marks[-1].removeprefix(PEAK_RSS_MARK)) if marks else float("nan")


class RayHead:
    """A head started by infra/ray-head.sh (token auth, every port on 127.0.0.1), its environment
    ``extra`` exported to it as a user would (every job's driver inherits it), and the client side of
    ``ray job submit``; stopped by its process group, never by `ray stop`."""

    def __init__(self, folder: Path, port: int, dashboard: int, agent_port: int, extra: dict | None = None):
        import sys

        self.folder, self.token_file = folder, folder / "secrets" / "ray_token"  # never the user's ~/.ray
        self.ray_bin = Path(sys.executable).parent / "ray"
        # the cluster runs the project's environment: `python` in an entrypoint must be its python (and
        # nothing of a Ray this test process may have started: the head is a cluster of its own)
        parent = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.base = {**parent, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log = folder / "head.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["bash", str(ROOT / "infra" / "ray-head.sh")], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         env={**self.base, **(extra or {}), "RAY_PORT": str(port), "RAY_DASHBOARD_PORT": str(dashboard),
                                              "RAY_NUM_CPUS": "4", "RAY_DASHBOARD_AGENT_PORT": str(agent_port),
                                              "RAY_AUTH_TOKEN_PATH": str(self.token_file), "JUKEBOX_RUNS_DIR": str(folder / "head-runs")})
        self.api = f"http://127.0.0.1:{dashboard}"
        self.env = {**self.base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file), "RAY_API_SERVER_ADDRESS": self.api}

    def wait_for_api(self, timeout: float = 120) -> int | None:
        """The job API's answer to a request without the token, once it answers (401 when secure)."""
        import urllib.error

        deadline, status = time.time() + timeout, None
        while time.time() < deadline and status is None:
            try:
                status = urllib.request.urlopen(f"{self.api}/api/version", timeout=2).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(1)
        return status

    def submit(self, *entrypoint: str, environment: dict | None = None) -> subprocess.CompletedProcess:
        # the dashboard answers before the head's job agent has registered: a submit in that window
        # fails with "No available agent to submit job" (seen on a loaded machine); retry only that
        for _ in range(30):
            proc = subprocess.run([str(self.ray_bin), "job", "submit", "--working-dir", str(ROOT), "--", "python", *entrypoint],
                                  capture_output=True, text=True, timeout=600, env=environment or self.env, cwd=ROOT)
            if "No available agent" not in proc.stdout + proc.stderr:
                break
            time.sleep(3)
        return proc

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # never `ray stop`: it would kill every Ray on the machine
        self.proc.wait(timeout=60)


def job_succeeded(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "succeeded" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
