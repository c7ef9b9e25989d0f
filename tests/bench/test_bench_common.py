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
