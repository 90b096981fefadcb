"""Where the host finds the worker: its home folder, the token, ``worker.json``, its Python.

The same conventions as the worker (PROTOCOL.md, "Transport and discovery"):

- home: ``$MATTEKIT_HOME``, else ``~/.mattekit``, private to the user (0700 on POSIX);
- ``<home>/token``: 64 hex characters (32 random bytes), mode 0600, created with
  ``O_CREAT | O_EXCL`` by whichever side needs it first and read back, so racing creators agree;
- ``<home>/worker.json``: pid, host, port, version, protocol of the running worker (may be stale);
- the worker's interpreter: ``$MATTEKIT_PYTHON`` (``install.py --nuke`` sets it in Nuke's
  ``init.py``), never Nuke's own Python.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Dict, Optional

from mattekit_host.errors import MattekitHostError, WorkerUnavailable

HOME_ENV = "MATTEKIT_HOME"
PYTHON_ENV = "MATTEKIT_PYTHON"
TOKEN_FILE = "token"
WORKER_FILE = "worker.json"
LOG_FILE = "worker.log"      # the worker's own log (it writes it)
OUTPUT_FILE = "worker.out"   # stdout/stderr of a worker this host started
TOKEN_HEX_CHARS = 64
TOKEN_WAIT_SECONDS = 2.0
_POSIX = os.name == "posix"


def mattekit_home() -> Path:
    """``$MATTEKIT_HOME``, else ``~/.mattekit``; created private to the user (0700)."""
    env = os.environ.get(HOME_ENV)
    home = Path(env).expanduser() if env else Path.home() / ".mattekit"
    return ensure_home(home)


def ensure_home(home: Path) -> Path:
    """Create ``home`` (mode 0700 on POSIX) if needed and return it."""
    home = Path(home).expanduser()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _POSIX and (home.stat().st_mode & 0o777) != 0o700:
            os.chmod(str(home), 0o700)
    except OSError as exc:
        raise MattekitHostError(
            f"mattekit home folder {home} cannot be created or made private "
            f"({exc.strerror or exc}); set {HOME_ENV} to a folder you own"
        ) from exc
    return home


def _valid_token(text: str) -> bool:
    return len(text) == TOKEN_HEX_CHARS and all(c in "0123456789abcdef" for c in text)


def read_or_create_token(home: Path) -> str:
    """The token in ``home/token``, creating it when absent (race-safe, same format as the
    worker's): ``O_CREAT | O_EXCL`` with mode 0600, then read back. A creator racing us may have
    made the file but not written it yet, so an incomplete token is read again for a moment."""
    home = ensure_home(home)
    path = home / TOKEN_FILE
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(str(path), flags, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise MattekitHostError(
            f"{path}: cannot create the mattekit token file ({exc.strerror or exc}); "
            f"check the permissions of {home}"
        ) from exc
    else:
        try:
            os.write(fd, secrets.token_hex(TOKEN_HEX_CHARS // 2).encode("ascii"))
        finally:
            os.close(fd)
    deadline = time.monotonic() + TOKEN_WAIT_SECONDS
    while True:
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise MattekitHostError(
                f"{path}: cannot read the mattekit token file ({exc.strerror or exc})"
            ) from exc
        if _valid_token(text):
            break
        if time.monotonic() > deadline:
            raise MattekitHostError(
                f"{path}: the mattekit token file is not 64 hex characters; delete it and "
                "start again (the worker makes a new one)"
            )
        time.sleep(0.02)
    if _POSIX and (path.stat().st_mode & 0o077):
        os.chmod(str(path), 0o600)  # someone loosened it: the token is only as secret as this
    return text


def worker_python() -> str:
    """The interpreter that runs the worker: ``$MATTEKIT_PYTHON``, else WorkerUnavailable."""
    python = os.environ.get(PYTHON_ENV, "").strip()
    if not python:
        raise WorkerUnavailable(
            f"no Python for the mattekit worker: {PYTHON_ENV} is not set; run "
            "`python3 install.py --nuke` in the mattekit folder (it sets it in ~/.nuke/init.py) "
            f"or set {PYTHON_ENV} to the mattekit environment's python"
        )
    return python


def read_worker_info(home: Path) -> Optional[Dict[str, Any]]:
    """The contents of ``home/worker.json`` when it names a host and port, else None.

    The file may be stale (its worker died): only a successful connection proves otherwise."""
    try:
        info = json.loads((Path(home) / WORKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    port = info.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return None
    return info
