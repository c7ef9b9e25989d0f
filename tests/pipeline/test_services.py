"""Folders that hold code the jobs will run (torch.compile's cache): this user's own, or refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from pipeline.services import COMPILE_CACHE_ENV, instruction_set_key, private_dir, use_private_compile_cache


def test_the_compile_cache_is_an_owner_only_folder_of_the_project(tmp_path, monkeypatch):
    monkeypatch.setenv("JUKEBOX_CACHE_DIR", str(tmp_path / "cache"))
    for var in COMPILE_CACHE_ENV:
        monkeypatch.delenv(var, raising=False)
    root = use_private_compile_cache()
    isa = root / instruction_set_key()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(isa / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(isa / "triton")
    for folder in (root, isa, isa / "inductor", isa / "triton"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


@pytest.mark.parametrize("first", ["", "import torch._inductor.config; "])
def test_torch_inductor_writes_into_it_and_not_into_tmp(tmp_path, first):
    """In a fresh process, as a job starts: inductor's own cache_dir() is the project's folder, also
    when torch._inductor was imported first (it then puts /tmp's folder into the environment)."""
    code = (f"import os; {first}from pipeline.services import use_private_compile_cache; use_private_compile_cache(); "
            "from torch._inductor.runtime.cache_dir_utils import cache_dir; print(cache_dir())")
    env = {**os.environ, "JUKEBOX_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == str(tmp_path / "cache" / "compile" / instruction_set_key() / "inductor")


def test_each_instruction_set_profile_compiles_into_a_folder_of_its_own(tmp_path, monkeypatch):
    """A graph compiled for AVX2 and loaded where AVX-512 is on (or the reverse, on a cluster whose
    nodes share a home folder) crashed the process: the folder is keyed by what decides the code."""
    for var in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(var, raising=False)
    native = instruction_set_key()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    avx2 = instruction_set_key()
    assert native != avx2 and avx2 == instruction_set_key() and len(avx2) == 12
    monkeypatch.setenv("JUKEBOX_CACHE_DIR", str(tmp_path / "cache"))
    for var in COMPILE_CACHE_ENV:
        monkeypatch.delenv(var, raising=False)
    use_private_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "compile" / avx2 / "inductor")


def test_a_folder_others_can_write_is_closed_and_a_link_or_a_stranger_s_folder_refused(tmp_path):
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    os.chmod(open_folder, 0o777)
    private_dir(open_folder)
    assert stat.S_IMODE(os.stat(open_folder).st_mode) == 0o700
    (tmp_path / "link").symlink_to(open_folder)
    with pytest.raises(PermissionError, match="symlink"):
        private_dir(tmp_path / "link")
    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root")
    theirs = tmp_path / "torchinductor_victim"  # what another user could create first under /tmp
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    with pytest.raises(PermissionError, match="belongs to uid 12345"):
        private_dir(theirs)


def test_a_second_process_of_the_same_shapes_loads_its_compiled_graph_from_the_cache(tmp_path):
    code = ("from pipeline.services import use_private_compile_cache; use_private_compile_cache()\n"
            "import torch\nfrom torch._dynamo.utils import counters\n"
            "f = torch.compile(lambda x: (x.sin() + x.cos()).sum())\nf(torch.randn(64))\n"
            "print(counters['inductor'].get('fxgraph_cache_hit', 0), counters['inductor'].get('fxgraph_cache_miss', 0))")
    env = {**os.environ, "JUKEBOX_CACHE_DIR": str(tmp_path / "cache")}
    for var in COMPILE_CACHE_ENV:
        env.pop(var, None)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0] == ["0", "1"] and runs[1] == ["1", "0"]  # compiled once, then loaded
    assert any((tmp_path / "cache" / "compile" / instruction_set_key() / "inductor").rglob("*"))
