"""Run names: two jobs never share one; a given name is kept (it resumes)."""

from pipeline.train.config import CheckpointConfig


def test_run_names_differ_between_levels_and_jobs():
    from toy_training import ToyTask

    from pipeline.train.driver import run_name

    a, b = run_name(ToyTask(), CheckpointConfig(), "bottom"), run_name(ToyTask(), CheckpointConfig(), "middle")
    assert a != b and "bottom" in a and str(__import__("os").getpid()) in a
    assert run_name(ToyTask(), CheckpointConfig(run_name="mine")) == "mine"
