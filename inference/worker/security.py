"""Who may talk to the worker and where it may write.

- The home folder (``$MATTEKIT_HOME``, else ``~/.mattekit``) is private to the user (0700).
- The token file in it holds 32 random bytes as 64 hex characters (0600), created with
  ``O_CREAT | O_EXCL`` by whichever side needs it first and then read back, so two creators
  racing each other agree on one token. Tokens are compared in constant time.
- Only loopback peers are served.
- Outputs must resolve (symlinks followed) inside the allowed roots; inputs may be anywhere.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

from mattekit.inference.errors import MattekitError

TOKEN_FILE = "token"
TOKEN_HEX_CHARS = 64
WORK_ROOTS_ENV = "MATTEKIT_WORK_ROOTS"
HOME_ENV = "MATTEKIT_HOME"
_POSIX = os.name == "posix"


class SecurityError(MattekitError):
    """The home folder or the token file cannot be used safely."""


def home_folder(override: Optional[Path] = None) -> Path:
    """``override``, else ``$MATTEKIT_HOME``, else ``~/.mattekit`` (not created here)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".mattekit"


def ensure_home(home: Path) -> Path:
    """Create the home folder private to the user (mode 0700 on POSIX) and return it."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _POSIX and (home.stat().st_mode & 0o777) != 0o700:
            os.chmod(home, 0o700)
    except OSError as exc:
        raise SecurityError(
            f"worker home {home} cannot be created or made private ({exc.strerror or exc}); "
            f"set {HOME_ENV} to a folder you own"
        ) from exc
    return home


def _valid_token(text: str) -> bool:
    return len(text) == TOKEN_HEX_CHARS and all(c in "0123456789abcdef" for c in text)


def read_or_create_token(home: Path, wait: float = 2.0) -> str:
    """The token in ``home/token``, creating it (O_EXCL, 0600) when absent.

    A creator racing us may have made the file but not written it yet: read again until it
    holds a full token or ``wait`` seconds pass.
    """
    ensure_home(home)
    path = home / TOKEN_FILE
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SecurityError(f"{path}: cannot create the token file ({exc.strerror or exc})") \
            from exc
    else:
        token = secrets.token_hex(TOKEN_HEX_CHARS // 2)
        try:
            os.write(fd, token.encode("ascii"))
        finally:
            os.close(fd)
    deadline = time.monotonic() + wait
    while True:
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise SecurityError(f"{path}: cannot read the token file ({exc.strerror or exc})") \
                from exc
        if _valid_token(text):
            break
        if time.monotonic() > deadline:
            raise SecurityError(
                f"{path}: the token file is not 64 hex characters; delete it and start again"
            )
        time.sleep(0.02)
    if _POSIX and (path.stat().st_mode & 0o077):
        os.chmod(path, 0o600)  # someone loosened it: the token is only as secret as this file
    return text


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison; anything but a string is a mismatch."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def work_roots_from_env() -> list[Path]:
    """``$MATTEKIT_WORK_ROOTS`` split by ``os.pathsep`` (empty entries ignored)."""
    text = os.environ.get(WORK_ROOTS_ENV, "")
    return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]


def resolved_roots(roots: Iterable[Path]) -> list[Path]:
    """Each root made absolute with symlinks resolved, duplicates dropped, order kept."""
    seen: list[Path] = []
    for root in roots:
        resolved = Path(root).expanduser().resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def inside_roots(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` resolved (symlinks followed, ``..`` collapsed) lies in one of ``roots``
    (already resolved)."""
    if not path.is_absolute():
        return False
    resolved = path.resolve()
    if sys.platform == "win32":
        return any(_inside(Path(str(resolved).lower()), Path(str(r).lower())) for r in roots)
    return any(_inside(resolved, root) for root in roots)
