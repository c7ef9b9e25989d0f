"""The pipeline job's plan: which stages run, what a stage's fingerprint holds, what a rerun skips."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.flow.config import STAGES, PipelineConfig, prepare
from pipeline.flow.state import State, config_fingerprint, digest, tree_fingerprint


def cfg(tmp_path, **kw) -> PipelineConfig:
    return from_dict(PipelineConfig, prepare({"input": str(tmp_path), "output": str(tmp_path / "run"), **kw}))


def test_stage_selection(tmp_path):
    assert cfg(tmp_path).selected() == list(STAGES)
    assert cfg(tmp_path, from_stage="prior.top").selected() == ["prior.top", "prior.middle", "prior.bottom", "sample"]
    assert cfg(tmp_path, until="vqvae.bottom").selected() == ["preprocess", "vqvae.top", "vqvae.middle", "vqvae.bottom"]
    assert cfg(tmp_path, only="sample,preprocess").selected() == ["preprocess", "sample"]  # in the pipeline's order
    for bad, message in (({"only": "prior.sideways"}, "unknown stage 'prior.sideways'"),
                         ({"from_stage": "sample", "until": "preprocess"}, "comes after"),
                         ({"only": "sample", "from_stage": "preprocess"}, "excludes")):
        with pytest.raises(ConfigError, match=message):
            cfg(tmp_path, **bad)


def test_sections_are_the_jobs_configs_and_take_their_level_from_their_name(tmp_path):
    c = cfg(tmp_path, vqvae={"middle": {"preset": "tiny", "runtime": {"total_steps": 7}}}, prior={"bottom": {"holdout": 0.2}})
    assert c.vqvae.middle.level == "middle" and c.vqvae.middle.runtime.total_steps == 7 and c.vqvae.top.level == "top"
    assert c.prior.bottom.level == "bottom" and c.prior.bottom.holdout == 0.2
    with pytest.raises(ConfigError, match="unknown key"):
        cfg(tmp_path, vqvae={"top": {"runtime": {"total_stepz": 7}}})
    with pytest.raises(ConfigError, match="a section's level is its name"):
        cfg(tmp_path, vqvae={"top": {"level": "bottom"}})
    with pytest.raises(ConfigError, match="no such folder"):
        cfg(tmp_path, input=str(tmp_path / "missing"))


def test_a_fingerprint_ignores_what_does_not_change_the_result(tmp_path):
    base = cfg(tmp_path).vqvae.top
    moved = cfg(tmp_path, vqvae={"top": {"ray_address": "10.0.0.1:6379", "num_cpus": 8}}).vqvae.top
    changed = cfg(tmp_path, vqvae={"top": {"optim": {"lr": 1e-2}}}).vqvae.top
    assert digest(config_fingerprint(base)) == digest(config_fingerprint(moved))
    assert digest(config_fingerprint(base)) != digest(config_fingerprint(changed))


def test_the_corpus_fingerprint_sees_a_changed_file_but_not_the_run_folder_inside_it(tmp_path):
    (tmp_path / "song.wav").write_bytes(b"x" * 10)
    before = tree_fingerprint(tmp_path, exclude=tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pipeline.json").write_text("{}")
    assert tree_fingerprint(tmp_path, exclude=tmp_path / "run") == before
    (tmp_path / "song.wav").write_bytes(b"x" * 11)
    assert tree_fingerprint(tmp_path, exclude=tmp_path / "run") != before


def test_state_skips_only_a_finished_stage_on_the_same_fingerprint(tmp_path):
    state = State(tmp_path)
    state.record("vqvae.top", "abc", "finished", {"preprocess": {}}, {"model": "models:/v/1"}, 3.0)
    state.record("prior.top", "def", "failed", {}, {}, 1.0, "RuntimeError: boom")
    again = State(tmp_path)  # read back from pipeline.json
    assert again.done("vqvae.top", "abc") == {"model": "models:/v/1"} and again.done("vqvae.top", "abd") is None
    assert again.done("prior.top", "def") is None and again.outputs("prior.top") is None
