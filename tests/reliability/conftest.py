"""Helpers of the reliability suite: a worker with one fault armed, tiny plates, checks that
nothing partial or corrupt is visible, and the hypothesis settings of the fuzz tests."""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pytest
from hypothesis import HealthCheck, settings
from worker_helpers import Worker, make_plate, start_worker, wait_for, worker_env

from mattekit.inference.cache import FrameCache
from mattekit.inference.exrio import read_exr

FAULT_WORKER = Path(__file__).with_name("fault_worker.py")
PLUGIN = Path(__file__).resolve().parents[2] / "plugin"
POSIX = os.name == "posix"
WIDTH, HEIGHT = 64, 36

# Fuzzing: few examples, no deadline (the machine is shared), the same examples every run.
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

posix_only = pytest.mark.skipif(not POSIX, reason="kill -9 and POSIX file modes")


def tiny_plate(folder: Path, count: int, seed: int) -> str:
    """A 64x36 EXR sequence (frames 1..count); returns its #### pattern."""
    return make_plate(folder, count, seed, width=WIDTH, height=HEIGHT)


@dataclass
class Fault:
    """A fault armed in a worker: ``marker`` appears when it is reached; creating ``release``
    lets a hanging fault go on."""

    at: str
    marker: Path
    release: Path
    skip: int = 0

    def env(self) -> str:
        return json.dumps({"at": self.at, "marker": str(self.marker),
                           "release": str(self.release), "skip": self.skip})

    def reached(self, timeout: float = 60.0) -> bool:
        return wait_for(self.marker.exists, timeout=timeout, period=0.02)

    def let_go(self) -> None:
        self.release.touch()


def fault_env(home: Path, cache: Path, fault: Optional[Fault],
              roots: Sequence[Path] = ()) -> dict[str, str]:
    env = worker_env(home, cache)
    if fault is not None:
        env["MATTEKIT_TEST_FAULT"] = fault.env()
    if roots:
        env["MATTEKIT_WORK_ROOTS"] = os.pathsep.join(map(str, roots))
    return env


def start_faulty(home: Path, cache: Path, fault: Optional[Fault],
                 roots: Sequence[Path] = ()) -> Worker:
    """The real worker in the foreground, run through fault_worker.py with ``fault`` armed."""
    return start_worker(home, cache, env=fault_env(home, cache, fault, roots),
                        launcher=(str(FAULT_WORKER),))


def make_fault(tmp_path: Path, at: str, skip: int = 0) -> Fault:
    return Fault(at, tmp_path / f"{at}.reached", tmp_path / f"{at}.release", skip)


def kill9(worker: Worker) -> None:
    """SIGKILL: no handler runs, nothing is flushed or cleaned up."""
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)


def python_shim(tmp_path: Path) -> str:
    """An executable standing in for the worker's python, so a host client that (re)starts the
    worker starts it through fault_worker.py (a fault fires once: the restart is healthy)."""
    shim = tmp_path / "python-shim"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAULT_WORKER}" "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def host_client_module() -> Any:
    if str(PLUGIN) not in sys.path:
        sys.path.insert(0, str(PLUGIN))
    import mattekit_host.client as client

    return client


def temp_leftovers(folder: Path) -> list[Path]:
    """Hidden temp files of atomic writes (``.name.xxxx.tmp...``) left in a folder tree."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def assert_cache_intact(cache_root: Path) -> int:
    """Every published entry passes a full digest check and its EXR reads; returns the count."""
    cache = FrameCache(cache_root)
    entries = cache.entries()
    for entry in entries:
        assert cache.lookup(entry.key, verify=True) is not None, entry.key
        read_exr(entry.files["matte.exr"])
    return len(entries)


def writer_temps(cache_root: Path) -> list[Path]:
    """Private folders of cache writers (``tmp/w-*``): where a write in progress lives."""
    return sorted((cache_root / "tmp").glob("w-*"))
