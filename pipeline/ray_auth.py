"""Ray's token auth and loopback binding, one way for the embedded Ray and ``infra/ray-head.sh``.

Why this exists: Ray 2.60 turns token auth on for a ``ray start --head`` only when a token
file already exists, writes the token it generates for ``ray.init()`` with the umask's
mode (0644: readable by every user of the host), and binds GCS, the raylet, Ray Client and
the dashboard agent's job endpoint to the node's address. Anyone who reaches those ports
runs code (CVE-2023-48022). Here the token is made once with mode 0600, auth is on for
every Ray this project starts or joins, and a node whose address is loopback keeps every
port on 127.0.0.1 (Ray otherwise swaps a loopback ``--node-ip-address`` for the host's
address; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch that keeps it, and
such a head takes no worker nodes, which is the point).

The token itself is never printed or logged: only its path.

    python -m pipeline.ray_auth token     # make the token file if missing (0600); prints its path
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
import sys
from pathlib import Path

log = logging.getLogger(__name__)

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
TOKEN_VALUE = "RAY_AUTH_TOKEN"  # the token itself, an alternative to the file (never logged)
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a loopback node address as given


def token_path() -> Path:
    """$RAY_AUTH_TOKEN_PATH, else Ray's default ~/.ray/auth_token."""
    return Path(os.environ.get(TOKEN_PATH) or Path.home() / ".ray" / "auth_token").expanduser()


def ensure_token(path: Path | None = None) -> Path:
    """The token file at ``path`` (default: ``token_path()``), created with mode 0600 if missing.

    An existing file readable by group or others is narrowed to 0600 (with a warning that
    names the path, never the token); an empty one or a non-regular file is an error.
    """
    path = Path(path or token_path())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: never follow or overwrite what is there; the mode applies at creation, no window at 0644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise RuntimeError(f"Ray auth token {path} is not a regular file") from None
        if info.st_mode & 0o077:
            log.warning("Ray auth token %s was readable by other users (mode %o); narrowed to 0600", path, info.st_mode & 0o777)
            os.chmod(path, 0o600)
        if not path.read_text().strip():
            raise RuntimeError(f"Ray auth token {path} is empty; delete it to have a new one generated") from None
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator
    return path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_ray_environment(address: str = "local") -> None:
    """Set this process's (and so its children's) environment for a Ray with token auth.

    Called before ``ray.init(address)``. ``"local"`` starts a Ray in this process: its token
    is made if missing and every port stays on 127.0.0.1. Joining a cluster sends the
    token that ``token_path()`` (or $RAY_AUTH_TOKEN) holds: none is made up, so a client
    without the cluster's token gets Ray's own "no token found" error. An explicit
    ``RAY_AUTH_MODE`` is respected (Ray warns when it is ``disabled``).
    """
    os.environ.setdefault(AUTH_MODE, "token")
    token = os.environ[AUTH_MODE] == "token" and not os.environ.get(TOKEN_VALUE)
    host = "127.0.0.1" if address == "local" else address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if address == "local" and token:
        os.environ[TOKEN_PATH] = str(ensure_token())
    elif token and token_path().exists():
        os.environ[TOKEN_PATH] = str(token_path())
    if is_loopback(host):  # else Ray dials the host's own address, where a loopback node does not listen
        os.environ[LOOPBACK_ONLY] = "0"
        # Ray reads this switch when it is imported; a process that imported Ray already gets it set here
        # (the loopback-binding test fails if a Ray upgrade moves it)
        if "ray._private.ray_constants" in sys.modules:
            sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False
    if "ray._raylet" in sys.modules:  # Ray reads RAY_AUTH_MODE into its C++ config once; re-read, as Ray's own set-up does
        sys.modules["ray._raylet"].Config.initialize("")


def main(argv: list[str]) -> int:
    if argv != ["token"]:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(ensure_token())
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main(sys.argv[1:]))
