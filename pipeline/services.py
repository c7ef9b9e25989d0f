"""The services every job uses, started the same way: the runs folder, Ray (embedded locally, or the
cluster's), DeepSpeed's op folder, timers. MLflow is ``pipeline.tracking``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR_ENV = "JUKEBOX_RUNS_DIR"
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # what Ray's job supervisor sets for a `ray job submit` entrypoint
DURABLE_RUNS_DIR = Path("~/.local/share/jukebox/runs")


def runs_dir() -> Path:
    """Where a job keeps by default what must outlive it: the MLflow store, checkpoints, samples.

    $JUKEBOX_RUNS_DIR when set; else the project's ``runs/`` for a local run; else, under
    ``ray job submit``, whose working directory is a temporary copy deleted with the job,
    ``~/.local/share/jukebox/runs`` on the node the job's driver runs on (the head)."""
    if os.environ.get(RUNS_DIR_ENV):
        return Path(os.environ[RUNS_DIR_ENV]).expanduser().resolve()
    if SUBMITTED_JOB_ENV in os.environ:
        return DURABLE_RUNS_DIR.expanduser()
    return PROJECT_ROOT / "runs"


RUNS_HELP = "the runs folder: $JUKEBOX_RUNS_DIR, else ./runs, else ~/.local/share/jukebox/runs under ray job submit"


def init_ray(address: str | None = None, num_cpus: int | None = None, progress: bool = True) -> str:
    """Never a bare ray.init(): it attaches to whatever cluster runs on the machine.

    ``address`` (or $RAY_ADDRESS, set by ``ray job submit``) joins a cluster; otherwise a
    fresh local Ray is started inside this process, on 127.0.0.1 only. Token auth is on
    either way (``pipeline.ray_auth``).
    """
    import ray

    from pipeline.ray_auth import secure_ray_environment

    target = address or os.environ.get("RAY_ADDRESS") or "local"
    if not ray.is_initialized():
        secure_ray_environment(target)
        kwargs = {"address": target, "logging_level": logging.WARNING, "log_to_driver": True}
        if target == "local":
            # Ray's own helpers inside the cluster (Ray Train's placement-group cleaner, the State API) find
            # the cluster by $RAY_ADDRESS, else by the last `ray start` on the host, which may be another
            # cluster or a dead one: pin the GCS port and tell every worker of this job where it is. The
            # dashboard (on 127.0.0.1, token auth) serves the State API that the cleaner polls; without
            # it the cleaner warns every second and Ray Train waits 12 s for it at the end of every fit.
            port = free_port()
            os.environ["RAY_GCS_SERVER_PORT"] = str(port)
            # in the environment Ray's processes inherit (not a job runtime_env: workers Ray prestarts
            # at init have none, and a job with one could not reuse them, ~1 s per actor)
            os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
            # nothing preempts a laptop's Ray: no watcher actor (one process less to start per fit)
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1",
                          _node_ip_address="127.0.0.1")
        try:
            ray.init(**kwargs)
        finally:
            if target == "local":
                os.environ.pop("RAY_ADDRESS", None)
        os.environ.pop("RAY_GCS_SERVER_PORT", None)  # this cluster's GCS is up; a Ray started later must not take its port
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    if not progress:  # nor a line per finished dataset: the job says what each step did
        logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
    return target


def use_venv_torch_extensions() -> str:
    """DeepSpeed's JIT-built ops (CPU Adam, the shared-memory collectives) in this environment's own
    folder: the default, ~/.cache/torch_extensions/<python>_<device>, is shared by every virtual
    environment on the host, and ninja rebuilds an op (~60 s on 2 cores) whenever another one
    built it last from its own sources. ``./dev.sh setup`` builds both ops there once."""
    import sys

    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


COMPILE_CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def private_dir(path: Path) -> Path:
    """A folder only this user can write, made 0700 when missing. One that is a symlink, belongs to
    another user, or that others may write is refused: code loaded from it could be anyone's."""
    import stat

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a plain folder (a symlink or a file): refusing to use it")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}): refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, but readable or writable by others: close it before anything is written
    return path


def compile_cache_dir() -> Path:
    """$JUKEBOX_CACHE_DIR/compile, else ~/.cache/jukebox/compile."""
    root = Path(os.environ.get("JUKEBOX_CACHE_DIR") or "~/.cache/jukebox").expanduser()
    return root / "compile"


# what decides the machine code inductor generates on a CPU: the instruction sets the CPU has, and
# the switches that cap the ones the libraries use
ISA_SWITCHES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def instruction_set_key() -> str:
    """A short key of this CPU's instruction sets (its /proc/cpuinfo flags) and the switches that
    cap them. Inductor's cache does not key its graphs by them: a graph compiled under one set and
    loaded under another crashed the process (heap corruption, measured with torch 2.13), and a
    home folder shared by a cluster's nodes can hold graphs from CPUs of several kinds."""
    import hashlib
    import platform

    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    switches = ";".join(f"{k}={os.environ.get(k, '')}" for k in ISA_SWITCHES)
    return hashlib.sha256(f"{flags}|{switches}".encode()).hexdigest()[:12]


def use_private_compile_cache() -> Path:
    """torch.compile's generated code and pickled graphs in this user's own 0700 folder, not the
    predictable /tmp/torchinductor_<user>, which torch uses even when another user made it first
    (its owner could then swap the code the next compiled step runs), one folder per instruction-set
    key (``instruction_set_key``). Set in this process's environment, so Ray workers started from it
    inherit it; a worker on another node calls it too and gets its own CPU's folder."""
    root = private_dir(compile_cache_dir())
    isa = private_dir(root / instruction_set_key())
    for var, sub in zip(COMPILE_CACHE_ENV, ("inductor", "triton"), strict=True):
        given = os.environ.get(var)
        if given and var == "TORCHINDUCTOR_CACHE_DIR":
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir

            if os.path.abspath(given) == os.path.abspath(default_cache_dir()):
                given = None  # not the user's choice: importing torch._inductor (torch.compiler.disable does) sets it to /tmp's
        os.environ[var] = str(private_dir(Path(given).expanduser() if given else isa / sub))
    return root


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_cpu_seconds() -> float | None:
    """CPU-seconds every process on this machine has used (Linux /proc/stat), None elsewhere.

    Counts Ray's daemons and idle workers too, which a per-process timer would miss.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class PhaseTimer:
    """Wall time and machine-wide CPU time of each phase of a job (for its summary)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float | None]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), machine_cpu_seconds()
        try:
            yield
        finally:
            c1 = machine_cpu_seconds()
            self.phases[name] = {"wall_s": round(time.perf_counter() - t0, 3),
                                 "machine_cpu_s": round(c1 - c0, 3) if c0 is not None and c1 is not None else None}
