"""A sampling run's folder, treated as a place others may share: claimed for one request, written
without following a link, and uploaded by the list of what the run wrote, never by a walk.

- ``claim``: a new folder (made 0700), an empty one of this user, or one holding this same
  request (a resumed run). Anything else is refused: ``--out ~`` must not become a run folder
  whose every file is uploaded to MLflow.
- Every write goes to a fresh temporary file (``O_EXCL | O_NOFOLLOW``) renamed into place, in
  folders checked to be real folders inside the run folder: a planted symlink redirects nothing.
- ``written``: the files this run made or took over from the run it resumes; the MLflow run
  gets those and nothing else.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.config import ConfigError

REQUEST = "request.json"


class SampleOutput:
    def __init__(self, root: Path):
        self.root = root
        self.written: dict[str, Path] = {}  # relative path -> file, in the order written

    def claim(self, request: dict[str, Any]) -> None:
        """Take the folder for this request, naming what differs when it holds another."""
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.root, 0o700)
            st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"--out {self.root} is not a folder (a symlink or a file): give a new folder")
        if st.st_uid != os.geteuid():
            raise ConfigError(f"--out {self.root} belongs to another user: give a folder of your own")
        os.chmod(self.root, 0o700)
        before = self.existing(REQUEST)
        if before is None:
            if any(self.root.iterdir()):
                raise ConfigError(f"--out {self.root} is not empty and holds no sampling run: give a new or empty folder "
                                  "(everything a run writes there is uploaded to MLflow)")
            self.write_text(REQUEST, json.dumps(request, indent=1, sort_keys=True))
            return
        held = json.loads(before.read_text())
        differs = sorted(k for k in set(held) | set(request) if held.get(k) != request.get(k))
        if differs:
            raise ConfigError(f"{self.root} holds another run (it differs in {', '.join(differs)}): use another --out, "
                              f"or the same settings to resume it")
        self.written[REQUEST] = before

    def path(self, rel: str) -> Path:
        """``root/rel`` with every folder on the way a real folder (made 0700 when missing)."""
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"not a path inside the run folder: {rel!r}")
        folder = self.root
        for part in parts[:-1]:
            folder = folder / part
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(folder).st_mode):
                    raise ConfigError(f"{folder} is not a folder (a symlink?): refusing to write through it") from None
        return folder / parts[-1]

    def names(self, rel_folder: str) -> list[str]:
        """The files in a folder of the run (sorted; none when it does not exist): what a killed run left there."""
        folder = self.root / rel_folder
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise ConfigError(f"{folder} is not a folder (a symlink?): refusing to read through it")
        except FileNotFoundError:
            return []
        return sorted(p.name for p in folder.iterdir())

    def existing(self, rel: str) -> Path | None:
        """A file a resumed run left at ``rel`` (a regular file, not a link), taken over as this run's; else None."""
        path = self.path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file (a symlink?): refusing to read it")
        self.written[rel] = path
        return path

    def write(self, rel: str, fill: Callable[[BinaryIO], None]) -> Path:
        """Atomically: a killed run leaves the previous file or the new one, never half of one."""
        path = self.path(rel)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
            os.replace(tmp, path)  # replaces a link planted at ``path`` itself, never its target
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written[rel] = path
        return path

    def save_npy(self, rel: str, array: np.ndarray) -> Path:
        return self.write(rel, lambda fh: np.save(fh, array))

    def load_npy(self, rel: str) -> np.ndarray | None:
        path = self.existing(rel)
        return np.load(path, allow_pickle=False) if path is not None else None

    def write_text(self, rel: str, text: str) -> Path:
        return self.write(rel, lambda fh: fh.write(text.encode("utf-8")))

    def write_wav(self, rel: str, wave: np.ndarray, sample_rate: int) -> Path:
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, wave, sample_rate, subtype="PCM_16", format="WAV")
        return self.write(rel, lambda fh: fh.write(buf.getvalue()))

    def uploads(self, skip: tuple[str, ...] = ("codes/partial/",)) -> list[tuple[Path, str | None]]:
        """(file, artefact folder) for each file this run wrote, less the resume-only ones."""
        return [(p, Path(rel).parent.as_posix() if Path(rel).parent != Path(".") else None)
                for rel, p in self.written.items() if not rel.startswith(skip) and p.is_file() and not p.is_symlink()]
