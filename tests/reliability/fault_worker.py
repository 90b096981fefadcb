"""Run the real worker with one fault armed, for the reliability tests.

    python fault_worker.py start --foreground ...      (the worker's own arguments)

``$MATTEKIT_TEST_FAULT`` (JSON) names the fault: ``{"at": POINT, "marker": FILE,
"release": FILE}``. When the worker reaches POINT it creates ``marker`` (with O_EXCL: a fault
fires once, so a worker started again after it is healthy), so the test can act on observable
state, never on a guessed sleep. Then, depending on POINT:

- ``frame``: hangs inside the engine's ``process`` (mid-frame) until ``release`` exists;
- ``model_load``: hangs inside the engine's construction (the ONNX session is being made);
- ``cache_write``: writes the frame's EXR into the cache entry's temp folder, cuts it to half
  its size (a write in progress) and hangs;
- ``cache_hold``: writes the frame's EXR completely, then hangs holding the cache key's lock
  (another writer of the key must wait for it);
- ``enospc``: the EXR write fails as on a full disk (``OSError(ENOSPC)`` from the write, after
  half the file reached the disk).

Nothing here is imported by mattekit; it only wraps functions of the real worker.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

FAULT_ENV = "MATTEKIT_TEST_FAULT"


_calls = {"count": 0}


def _fire(fault: dict[str, Any]) -> bool:
    """Create the marker; False when it exists already (the fault has fired before) or while
    ``skip`` calls of the fault point have yet to pass (so a range can finish some frames)."""
    _calls["count"] += 1
    if _calls["count"] <= int(fault.get("skip", 0)):
        return False
    try:
        os.close(os.open(fault["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def _hang(fault: dict[str, Any]) -> None:
    release = fault.get("release")
    while not (release and os.path.exists(release)):
        time.sleep(0.02)


def _half(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as stream:
        stream.truncate(size // 2)


def arm(fault: dict[str, Any]) -> None:
    from mattekit.inference import exrio
    from mattekit.inference.engines import rvm

    point = fault["at"]
    if point == "frame":
        process = rvm.RvmEngine.process

        def hanging_process(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _fire(fault):
                _hang(fault)
            return process(self, *args, **kwargs)

        rvm.RvmEngine.process = hanging_process  # type: ignore[method-assign]
    elif point == "model_load":
        init = rvm.RvmEngine.__init__

        def hanging_init(self: Any, *args: Any, **kwargs: Any) -> None:
            if _fire(fault):
                _hang(fault)
            init(self, *args, **kwargs)

        rvm.RvmEngine.__init__ = hanging_init  # type: ignore[method-assign]
    elif point in ("cache_write", "cache_hold", "enospc"):
        write_atomically = exrio._write_atomically

        def faulty(path: Any, write: Callable[[str], None]) -> None:
            if point == "cache_write" and _fire(fault):
                write(os.fspath(path))  # straight into the cache entry's temp folder, then
                _half(os.fspath(path))  # cut short: the write is in progress when killed
                _hang(fault)
                return

            def full_disk(temp: str) -> None:
                write(temp)
                if _fire(fault):
                    _half(temp)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), temp)

            write_atomically(path, full_disk if point == "enospc" else write)
            if point == "cache_hold" and _fire(fault):
                _hang(fault)

        exrio._write_atomically = faulty  # write_exr looks it up in exrio's globals
    else:
        raise SystemExit(f"unknown fault point {point!r}")


def main() -> int:
    text = os.environ.get(FAULT_ENV)
    if text:
        arm(json.loads(text))
    from mattekit.inference.worker.cli import main as worker_main

    args = sys.argv[1:]
    if args[:2] == ["-m", "mattekit.inference.worker"]:  # called as `python -m ...` by a host
        args = args[2:]
    return worker_main(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
