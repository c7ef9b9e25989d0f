"""A benchmark's results file keeps every sitting; the count-based references score what they should."""

from __future__ import annotations

import json

import numpy as np

from bench import baselines, common


def test_sittings_accumulate_in_one_file_per_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    common.save("step", {"step_s": 0.5})
    common.save("step", {"step_s": 0.4}, variant="bf16")
    path = common.save("step", {"step_s": 0.45})
    record = json.loads(path.read_text())
    assert record["benchmark"] == "step" and [s["step_s"] for s in record["sittings"]] == [0.5, 0.4, 0.45]
    assert record["sittings"][0]["machine"]["cpu_model"] and common.latest("step")["step_s"] == 0.45
    assert common.latest("step", "bf16")["step_s"] == 0.4 and common.latest("other") is None


def test_the_references_score_a_predictable_sequence_below_its_entropy():
    cycle = np.tile(np.arange(8), 200)  # 3 bits of unigram entropy, fully predictable from the previous code
    bigram = baselines.bigram([cycle], [cycle], 8)["bigram_train_on_heldout_bits"]
    in_window = baselines.in_context([np.arange(8)], [cycle], 8, n_ctx=64)["in_context_bigram_on_heldout_bits"]
    assert bigram < 0.1 and in_window < 3.0


def test_the_isa_profile_reaches_the_measured_process_and_the_original_s_harness(tmp_path):
    """--isa avx2: the benchmark starts again with the switches set; ATen then runs its AVX2 kernels,
    and so does a child such as the original code's harness. The results file records it."""
    import subprocess
    import sys

    script = tmp_path / "bench_isa.py"
    script.write_text(f"""import json, subprocess, sys
sys.path.insert(0, {str(common.ROOT)!r})
import torch
from bench import common
common.use_isa(sys.argv[1])
child = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({{"facts": common.isa_facts(), "child": child}}))
""")
    run = lambda isa: json.loads(subprocess.run([sys.executable, str(script), isa], capture_output=True, text=True,  # noqa: E731
                                                check=True).stdout.strip().splitlines()[-1])
    avx2 = run("avx2")
    assert avx2["facts"]["aten_cpu_capability"] == "AVX2" and avx2["child"] == "AVX2"
    assert avx2["facts"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and avx2["facts"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    native = run("native")
    assert native["facts"]["ATEN_CPU_CAPABILITY"] == "" and native["child"] == native["facts"]["aten_cpu_capability"]
