"""Compiles paid once: the first call of each compiled function in a fresh process, with the
project's compile cache empty and then holding what the first process compiled.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_compile_cache.py [--isa native|avx2]

Three compiled functions, each timed in two new processes that share one new cache folder
(``$JUKEBOX_CACHE_DIR``, as every job sets it up: ``pipeline.services.use_private_compile_cache``):

- ``sampler``: the reference prior's one-token sampling step (``TokenSampler(compile=True)``), the
  first window of 64 tokens at batch 1;
- ``prior_step``: the reference prior's training step with a compiled forward (``--runtime.compile``),
  the first step;
- ``vqvae_step``: the bottom VQ-VAE's (width 32, depth 4) training step compiled, the first step.

Each figure is the time of that first call (compile or cache load included), next to the time of
a later call, and the inductor cache's hits and misses in that process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_isa_argument, save, use_isa  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

CHILD = r'''
import json, sys, time
sys.path.insert(0, {root!r})
from pipeline.services import use_private_compile_cache
use_private_compile_cache()
import torch
from torch._dynamo.utils import counters
torch.set_num_threads(1 if {what!r} == "sampler" else 2)
what = {what!r}
if what == "sampler":
    from bench.bench_prior_step import config
    from models.prior import Prior
    from models.sampling import SamplingSettings, TokenSampler
    torch.manual_seed(0)
    sampler = TokenSampler(Prior(config()).eval(), SamplingSettings(), compile=True)
    cond = {{"artist": torch.zeros(1, dtype=torch.long), "genres": torch.zeros(1, 1, dtype=torch.long)}}
    call = lambda: sampler.window(cond, torch.zeros(1, 0, dtype=torch.long), 64, torch.Generator().manual_seed(0))
elif what == "prior_step":
    from bench.bench_prior_step import batch_of, config, training_step
    step, _ = training_step(config(), compiled=True)
    data = batch_of(config(), 2, 0)
    call = lambda: step(data)
else:
    from bench.bench_vqvae_step import training_step
    from models.losses import LossScales
    from models.vqvae import VQVAEConfig
    step = training_step(VQVAEConfig(level=0, width=32, depth=4), LossScales(0.01, 1.0), compiled=True, bf16=False)
    x = torch.randn(2, 65536, 1) * 0.1
    call = lambda: step(x)
t = time.perf_counter(); call(); first = time.perf_counter() - t
t = time.perf_counter(); call(); later = time.perf_counter() - t
ind = counters["inductor"]
print(json.dumps({{"first_s": first, "later_s": later, "fxgraph_hits": ind.get("fxgraph_cache_hit", 0),
                  "fxgraph_misses": ind.get("fxgraph_cache_miss", 0),
                  "autograd_cache_hits": counters["aot_autograd"].get("autograd_cache_hit", 0)}}))
'''


def run(what: str, cache: Path) -> dict:
    env = {**os.environ, "JUKEBOX_CACHE_DIR": str(cache)}
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), what=what)], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default="sampler,prior_step,vqvae_step")
    add_isa_argument(ap)
    args = ap.parse_args()
    use_isa(args.isa)
    result, rows = {}, []
    for what in args.what.split(","):
        with tempfile.TemporaryDirectory(prefix="compile-cache-") as tmp:
            first, second = run(what, Path(tmp)), run(what, Path(tmp))
        result[what] = {"first_process": first, "second_process": second}
        rows.append([what, f"{first['first_s']:.1f}", f"{second['first_s']:.1f}", f"{second['later_s']:.2f}",
                     f"{second['fxgraph_hits']} / {second['fxgraph_misses']}"])
    print(f"the first call of a compiled function in a new process, ISA profile {args.isa}")
    print(format_table(["function", "first process s (empty cache)", "second process s (cache)", "a later call s",
                        "second process: graph cache hits / misses"], rows))
    print(save("compile_cache", result))


if __name__ == "__main__":
    main()
