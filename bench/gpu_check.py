"""The first hour on a GPU, as one command: what runs and how fast, in one JSON.

    bash bench/gpu_check.sh [--out DIR] [--device cuda|cpu] [--parts demo,vqvae_step,prior_step,sampling] [--quick]

Each part runs in its own process with a time limit (about 8 minutes in all on one GPU):

- ``machine``: the GPU (name, compute capability, memory, bf16), torch and CUDA versions, ``nvidia-smi``;
- ``demo``: the demo pipeline (``infra/pipeline/demo.yaml``) with every training stage on the GPU
  (``runtime.use_gpu``) and the sample on it, compiled (CUDA graphs);
- ``vqvae_step``: the VQ-VAE step benchmark in bf16 autocast, eager and compiled;
- ``prior_step``: the prior step benchmark, fp32 eager and compiled, and compiled in bf16 autocast;
- ``sampling``: the sampling benchmark on the GPU, eager and compiled (CUDA graphs), batch 1 and 8,
  and a level of four windows with the batched prefill.

A part that fails or runs over its limit is recorded with its exit status and the end of its
output, and the others still run. Each benchmark's own sitting is kept under ``DIR/results``.
``--device cpu`` runs the same parts on this CPU; ``--quick`` cuts them to a few steps (what the
tests run, to check the plumbing without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("demo", "vqvae_step", "prior_step", "sampling")
LIMIT_S = {"demo": 210, "vqvae_step": 75, "prior_step": 75, "sampling": 100}  # 460 s; the GPU's start and the machine facts on top


def commands(device: str, out: Path, quick: bool) -> dict[str, list[str]]:
    """Each part's command line."""
    py = sys.executable
    gpu = device == "cuda"
    demo = [py, "jobs/pipeline.py", "--config", "infra/pipeline/demo.yaml", "--input", "demo", "--output", str(out / "demo"),
            "--mlflow_tracking_uri", f"sqlite:///{out / 'demo' / 'mlflow.db'}", "--sample.device", device,
            "--sample.compile", "true" if gpu else "false"]
    for stage in ("vqvae", "prior"):
        for level in ("top", "middle", "bottom"):
            demo += [f"--{stage}.{level}.runtime.use_gpu", "true" if gpu else "false"]
    vqvae = [py, "bench/bench_vqvae_step.py", "--device", device,
             "--variants", "bf16 autocast,compiled + bf16 autocast" if gpu else "fp32"]
    prior = [py, "bench/bench_prior_step.py", "--device", device] + (["--bf16"] if gpu else [])
    sampling = [py, "bench/bench_sampling.py", "--device", device, "--skip-song"]
    if quick:
        vqvae += ["--steps", "1", "--length", "8192"]
        prior += ["--steps", "1", "--no-compile"]
        sampling += ["--tokens", "8", "--batches", "1", "--no-compile", "--level-windows", "0"]
    return {"demo": demo, "vqvae_step": vqvae, "prior_step": prior, "sampling": sampling}


def machine(device: str) -> dict:
    import torch

    from bench.common import device_facts, isa_facts
    from bench.common import machine as host

    facts = {**host(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "isa": isa_facts()}
    if device == "cuda":
        facts.update(device_facts("cuda"))
        smi = shutil.which("nvidia-smi")
        if smi:
            run = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm", "--format=csv"],
                                 capture_output=True, text=True)
            facts["nvidia_smi"] = run.stdout.strip() or run.stderr.strip()
    return facts


def run_part(name: str, cmd: list[str], out: Path, limit: float) -> dict:
    """One part in its own process: exit status, seconds, the end of its output, and the sitting it saved."""
    env = {**os.environ, "JUKEBOX_BENCH_RESULTS": str(out / "results"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    log = out / "logs" / f"{name}.log"
    started = time.perf_counter()
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - started
    tail = log.read_text(errors="replace").splitlines()[-40:]
    record: dict = {"ok": rc == 0, "exit": rc, "seconds": round(seconds, 1), "limit_s": limit, "command": cmd[1:], "output_tail": tail}
    results = out / "results" / f"{name}.json"
    if rc == 0 and results.exists():
        record["figures"] = json.loads(results.read_text())["sittings"][-1]
    print(f"{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds:.0f} s", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json, each part's log and sitting")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="a few steps of each part (checks the plumbing, measures nothing)")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    from bench.common import resolve_device

    report: dict = {"device": args.device, "quick": args.quick, "machine": machine("cpu"), "parts": {}}
    try:
        resolve_device(args.device)
    except SystemExit as refused:  # no GPU: say so in the report and on the console, run nothing
        report["refused"] = str(refused)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        print(f"{refused}\n(--device cpu runs the same parts on this CPU)", file=sys.stderr)
        return 2
    report["machine"] = machine(args.device)
    cmds = commands(args.device, out, args.quick)
    started = time.perf_counter()
    for name in parts:
        report["parts"][name] = run_part(name, cmds[name], out, LIMIT_S[name] * (1 if args.device == "cuda" else 4))
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))  # after each part: a killed check keeps what it had
    report["seconds"] = round(time.perf_counter() - started, 1)
    path = out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=1))
    failed = [n for n, r in report["parts"].items() if not r["ok"]]
    print(f"{len(parts) - len(failed)} of {len(parts)} parts ran in {report['seconds']:.0f} s"
          + (f"; failed: {', '.join(failed)} (see {out / 'logs'})" if failed else "") + f"\n{path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
