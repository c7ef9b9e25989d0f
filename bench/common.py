"""Shared helpers for the benchmarks: the machine, result files (one per benchmark, its sittings
inside), the real-songs corpus, the matmul ceiling, and the original 2020 code's timings."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where sittings are saved: bench/gpu_check.sh points it at the folder it hands back
RESULTS = Path(os.environ.get("JUKEBOX_BENCH_RESULTS") or ROOT / "bench" / "results")
REALDATA = ROOT.parent / "shared" / "realdata" / "jamendo"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


# What each instruction-set profile sets for the measured process and for the original's harness (a
# child, it inherits them): PyTorch's ATen kernels and inductor's code generation, oneDNN, and MKL.
ISA_PROFILES = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
ISA_VARIABLES = sorted({k for profile in ISA_PROFILES.values() for k in profile})


def add_isa_argument(parser) -> None:
    parser.add_argument("--isa", choices=sorted(ISA_PROFILES), default="native",
                        help="instruction-set profile: native, or avx2 (what an AVX2-only CPU runs, emulated here)")


def use_isa(isa: str) -> None:
    """Run this benchmark under the ``isa`` profile. The libraries read these variables when they
    load, so the process starts again with them set (or cleared, for native) when they differ."""
    import sys

    want = ISA_PROFILES[isa]
    if all(os.environ.get(k) == want.get(k) for k in ISA_VARIABLES):
        from pipeline.services import use_private_compile_cache

        use_private_compile_cache()  # compiled graphs in a folder of this profile's own, as the jobs keep them
        return
    for k in ISA_VARIABLES:
        os.environ.pop(k, None)
    os.environ.update(want)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


def isa_facts() -> dict:
    """What the measured process ran with: the profile's variables and the kernels ATen chose."""
    import sys

    facts = {k: os.environ.get(k, "") for k in ISA_VARIABLES}
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return facts


def save(bench: str, payload: dict, variant: str = "") -> Path:
    """Add this sitting to ``bench/results/<bench>.json`` (every sitting of a benchmark in one file,
    newest last; ``variant`` names a protocol or setting of the same benchmark)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{bench}.json"
    record = json.loads(path.read_text()) if path.exists() else {"benchmark": bench, "sittings": []}
    record["sittings"].append({"variant": variant, "machine": machine(), "isa": isa_facts(), **payload})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def latest(bench: str, variant: str = "") -> dict | None:
    """The newest sitting of a benchmark (of one variant), or None."""
    path = RESULTS / f"{bench}.json"
    if not path.exists():
        return None
    found = [s for s in json.loads(path.read_text())["sittings"] if s.get("variant", "") == variant]
    return found[-1] if found else None


def add_device_argument(parser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                        help="where to measure: cpu, cuda (refused without a GPU), or auto (a GPU when there is one)")


def resolve_device(device: str) -> str:
    """``auto``: cuda when torch sees a GPU, else cpu; ``cuda`` without one is refused with the reason."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no GPU here"
                         + ("" if torch.version.cuda else " (a CPU-only build of torch)"))
    return device


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it (a no-op on the CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed_calls(fn, inputs: list, device: str = "cpu") -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``fn(x)`` for each input, the device's queued work included."""
    wall, cpu = [], []
    for x in inputs:
        synchronize(device)
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        synchronize(device)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def matmul_ceiling(size: int = 2048, reps: int = 5, device: str = "cpu", dtype: str = "float32") -> float:
    """The best FLOP/s of a few ``size``-square matmuls (fp32 unless ``dtype``) on this process's
    threads or the GPU: what MFU is measured against."""
    import torch

    if device == "cuda":
        size, reps = max(size, 8192), max(reps, 20)  # a GPU needs a bigger problem to reach its peak
    a, b = (torch.randn(size, size, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b
    synchronize(device)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        synchronize(device)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - t))
    return best


def device_facts(device: str) -> dict:
    """The GPU a sitting ran on (name, compute capability, memory, bf16), or just the CPU's kind."""
    import torch

    if device != "cuda":
        return {"device": device}
    props = torch.cuda.get_device_properties(0)
    return {"device": device, "gpu": props.name, "capability": f"{props.major}.{props.minor}", "memory_gb": props.total_memory / 2**30,
            "bf16": torch.cuda.is_bf16_supported(), "torch_cuda": torch.version.cuda,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30}


PEER_ENV = "JUKEBOX_PEER_HARNESS"  # a script that runs the original 2020 code unmodified: <script> <git dir> --only <config>


def peer(git_dir: str, config: str, *flags: str) -> dict:
    """The original 2020 Jukebox code's timings of one reference ``config`` (a_, b_ or c_), run in this sitting
    by the harness that ``$JUKEBOX_PEER_HARNESS`` names (default: ``peer/run.sh`` in the folder beside the checkout)."""
    import subprocess

    harness = os.environ.get(PEER_ENV) or str(ROOT.parent / "shared" / "peer" / "run.sh")
    out = subprocess.run(["bash", harness, git_dir, "--only", config, "--no-selfcheck", *flags], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def add_pairs_argument(parser) -> None:
    parser.add_argument("--pairs", type=int, default=3,
                        help="with --peer: alternating measurements (ours, the original, ours, ...) the speed-up is the median of")


def alternating_pairs(ours, original, pairs: int) -> dict:
    """Speed-ups (the original's seconds / ours) of ``pairs`` measurements taken in turn -- ours, the
    original, ours, the original, ... -- in one sitting: this VM's speed drifts by up to 15 % over
    minutes, and two measurements taken back to back share most of the drift. ``ours`` and
    ``original`` each measure once and return seconds (per step, or per token)."""
    import statistics

    rows = []
    for _ in range(pairs):
        mine = ours()
        theirs = original()
        rows.append({"ours_s": mine, "original_s": theirs, "speedup": theirs / mine})
    speedups = [r["speedup"] for r in rows]
    return {"pairs": rows, "speedup_median": statistics.median(speedups), "speedup_min": min(speedups),
            "speedup_max": max(speedups)}


def pairs_line(what: str, result: dict) -> str:
    return (f"{what}: {result['speedup_median']:.2f}x the original (median of {len(result['pairs'])} alternating pairs, "
            f"{result['speedup_min']:.2f}-{result['speedup_max']:.2f}x)")


def song_ids() -> list[str]:
    """The three shared songs, in the order of their metadata file."""
    import csv

    with open(REALDATA / "JamendoLyrics.csv", newline="", encoding="utf-8") as fh:
        return [Path(m["Filepath"]).stem for m in csv.DictReader(fh)]


def song_shards(work: Path, name: str, ids: list[str]) -> Path:
    """Shards of some of the three shared songs (their own vocabulary), preprocessed once with
    the linear aligner (alignment does not matter to the benchmarks that use this)."""
    import csv
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from corpus import write_jamendo_manifest

    from pipeline.demo_corpus import write_manifest

    out = work / f"shards-{name}"
    if not (out / "summary.json").exists():
        full = write_jamendo_manifest(work / "corpus")
        with open(full, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["id"] in ids]
        manifest = write_manifest(work / f"manifest-{name}.csv", rows)
        subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--input", str(manifest), "--output", str(out),
                        "--progress", "false", "--align.aligner", "linear", "--mlflow_tracking_uri", f"sqlite:///{work / 'pre.db'}"],
                       check=True, cwd=ROOT, capture_output=True)
    return out


def realdata_work(folder: str, prefix: str) -> Path:
    """The work folder of a benchmark on the shared real songs (a temporary one by default); exits
    when the songs are not there."""
    import sys
    import tempfile

    if not (REALDATA / "JamendoLyrics.csv").exists():
        sys.exit(f"the shared real songs are not at {REALDATA}")
    work = Path(folder or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def apply_sets(data: dict, items: list[str]) -> dict:
    """``--set KEY=VALUE`` flags into a job's config dict: dotted keys, YAML values (``model.width=64``)."""
    import yaml

    for item in items:
        dotted, _, value = item.partition("=")
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return data


# the ops that do a step's arithmetic (matmuls, convolutions, fused attention), forward and backward
ARITHMETIC_OPS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward",
                  "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"}


def arithmetic_floor(step, reps: int = 5) -> dict:
    """The time of a step's arithmetic alone: every matmul, convolution and fused attention call
    of one ``step()`` (forward and backward) is recorded with its shapes, strides and arguments,
    then replayed back to back on fresh tensors, ``reps`` times (the best). No step that does the
    same arithmetic with these kernels on this profile and threads can be faster: the rest of a
    step (norms, activations, the loss, the optimizer, copies) only adds to it."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    calls: list = []

    class Spec(tuple):  # a tensor argument: (shape, stride, dtype, device)
        pass

    def spec(x):
        return Spec((tuple(x.shape), tuple(x.stride()), x.dtype, x.device)) if isinstance(x, torch.Tensor) else x

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket.__name__ in ARITHMETIC_OPS:
                calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
            return func(*args, **kwargs)

    with Record():
        step()

    def make(x):
        if not isinstance(x, Spec):
            return x
        shape, stride, dtype, device = x
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0
        flat = torch.empty(size, dtype=dtype, device=device)
        flat.normal_() if dtype.is_floating_point else flat.zero_()
        return flat.as_strided(shape, stride)  # the same layout, broadcast (stride 0) dimensions included

    leaf = lambda v: isinstance(v, Spec)  # noqa: E731
    replay = [(func, tree_map(make, args, is_leaf=leaf), tree_map(make, kwargs, is_leaf=leaf)) for func, args, kwargs in calls]
    device = next((a.device.type for _, args, _ in replay for a in args if isinstance(a, torch.Tensor)), "cpu")
    by_op: dict[str, int] = {}
    for func, _, _ in calls:
        by_op[func.overloadpacket.__name__] = by_op.get(func.overloadpacket.__name__, 0) + 1
    best = float("inf")
    each = [float("inf")] * len(replay)
    with torch.no_grad():
        for _ in range(reps + 1):
            t = time.perf_counter()
            for i, (func, args, kwargs) in enumerate(replay):
                start = time.perf_counter()
                func(*args, **kwargs)
                synchronize(device)
                each[i] = min(each[i], time.perf_counter() - start)
            best = min(best, time.perf_counter() - t)
    shapes = lambda args: [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)][:3]  # noqa: E731
    slowest = sorted(range(len(replay)), key=lambda i: -each[i])[:10]
    return {"floor_s": best, "calls": len(calls), "calls_by_op": by_op,
            "slowest": [{"op": replay[i][0].overloadpacket.__name__, "shapes": shapes(replay[i][1]), "ms": 1000 * each[i]}
                        for i in slowest]}
