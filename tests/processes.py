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
