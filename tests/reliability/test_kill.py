"""kill -9 of the worker mid-frame, mid-cache-write and mid-model-load: nothing partial is ever
served, the next request succeeds, and the client's error names what happened."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from worker_helpers import start_worker, wait_for, worker_env

from mattekit.inference.cache import FrameCache
from mattekit.inference.exrio import read_exr
from mattekit.inference.render import RenderJob, render

from .conftest import (
    assert_cache_intact,
    host_client_module,
    kill9,
    make_fault,
    posix_only,
    python_shim,
    start_faulty,
    temp_leftovers,
    tiny_plate,
    writer_temps,
)

pytestmark = posix_only
NODE = "video-matte"


@pytest.fixture
def fault_home(tmp_path, monkeypatch):
    """Home, cache and a work root for a worker that the host client starts itself."""
    home, cache, work = tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    for name, value in worker_env(home, cache).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MATTEKIT_WORK_ROOTS", str(work))
    return home, cache, work


def test_when_killed_mid_frame_then_finished_frames_stay_and_the_host_client_restarts_it(
        tmp_path, fault_home, monkeypatch):
    home, cache, work = fault_home
    fault = make_fault(tmp_path, "frame", skip=2)  # frames 1 and 2 finish; 3 is being computed
    monkeypatch.setenv("MATTEKIT_TEST_FAULT", fault.env())
    plate = tiny_plate(tmp_path / "plate", 4, seed=40)
    out = work / "m.####.exr"
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-4", "out": str(out)}
    client_module = host_client_module()
    host = client_module.WorkerClient(home=home, python=python_shim(tmp_path), start_timeout=60,
                                      client_name="reliability")
    pids: list[int] = []

    def killer() -> None:
        # frame 3 is in the engine and frames 1 and 2 are in the cache (their encoders run
        # beside the engine): kill then
        if fault.reached() and wait_for(lambda: len(FrameCache(cache).entries()) == 2):
            info = client_module.paths.read_worker_info(home)
            pids.append(int(info["pid"]))
            os.kill(pids[0], signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        done = host.process(job)
    finally:
        thread.join(60)
        host.shutdown()
    assert pids, "the fault was never reached"
    assert done["cached"] == [1, 2] and done["computed"] == [3, 4], done
    reference = render(RenderJob(node=NODE, engine="rvm", plate=plate, frames="1-4",
                                 cache_root=tmp_path / "reference-cache"))
    for frame, want in zip(range(1, 5), reference.frames):
        got = read_exr(work / f"m.{frame:04d}.exr")
        np.testing.assert_array_equal(got.alpha, read_exr(want.path).alpha)
    assert temp_leftovers(work) == []
    assert assert_cache_intact(cache) == 4


def drain(client) -> list[dict]:
    """Every message until the worker's end of the connection closes."""
    messages = []
    while True:
        try:
            messages.append(client.recv())
        except (EOFError, ConnectionResetError):
            return messages


def test_when_killed_mid_cache_write_then_the_half_file_is_never_served(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "cache"
    fault = make_fault(tmp_path, "cache_write", skip=1)  # frame 1 is cached whole
    plate = tiny_plate(tmp_path / "plate", 3, seed=41)
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-3",
           "io_threads": 1}  # one encoder: frame 1 is published before frame 2 is written
    worker = start_faulty(home, cache, fault)
    with worker.client() as client:
        client.submit(job)
        assert fault.reached()
        half_written = [p / "matte.exr" for p in writer_temps(cache)]
        assert len(half_written) == 1 and half_written[0].is_file()
        kill9(worker)
        events = drain(client)
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["queued", "started"] and set(kinds[2:]) <= {"frame"}  # then EOF
    assert assert_cache_intact(cache) == 1  # frame 1 only: the half file is not an entry

    worker = start_worker(home, cache)  # a healthy worker on the same home and cache
    try:
        with worker.client() as client:
            events = client.process(job)
    finally:
        worker.stop()
    done = events[-1]
    assert done["event"] == "done", events
    assert done["cached"] == [1] and done["computed"] == [2, 3]
    for event in events:
        if event.get("event") == "frame":
            assert read_exr(event["path"]).alpha.shape == (36, 64)
    assert assert_cache_intact(cache) == 3


def test_when_killed_mid_model_load_then_the_error_says_the_worker_stopped_and_the_next_serves(
        tmp_path, fault_home):
    home, cache, _work = fault_home
    fault = make_fault(tmp_path, "model_load")
    plate = tiny_plate(tmp_path / "plate", 1, seed=42)
    job = {"node": NODE, "engine": "rvm", "plate": plate}
    worker = start_faulty(home, cache, fault)
    client_module = host_client_module()
    host = client_module.WorkerClient(home=home, spawn=False, client_name="reliability")
    errors: list[Exception] = []

    def run() -> None:
        try:
            host.process(job)
        except Exception as exc:  # the outcome under test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert fault.reached()
    kill9(worker)
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], client_module.WorkerUnavailable)
    message = str(errors[0])
    assert f"worker (pid {worker.process.pid}) stopped during the request" in message
    assert "could not be started again" in message

    worker = start_worker(home, cache)
    try:
        done = host.process(job)
    finally:
        worker.stop()
    assert done["computed"] == [1]
    assert assert_cache_intact(Path(cache)) == 1
