"""Faults other than a kill: a full disk, a corrupted cache entry, two workers racing on one
cache key, a client that disconnects mid-stream, a request that times out. After each, nothing
partial or corrupt is served, the next request succeeds and the error names the cause."""
from __future__ import annotations

import errno
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from worker_helpers import start_worker, wait_for

from mattekit.inference.cache import MANIFEST_NAME, FrameCache
from mattekit.inference.errors import CacheError
from mattekit.inference.exrio import read_exr
from mattekit.inference.render import RenderJob, render

from .conftest import (
    assert_cache_intact,
    host_client_module,
    make_fault,
    posix_only,
    start_faulty,
    temp_leftovers,
    tiny_plate,
    writer_temps,
)

NODE = "video-matte"


def frame_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "frame"]


@posix_only
def test_when_the_disk_fills_during_a_write_then_the_error_says_so_and_nothing_is_published(
        tmp_path):
    home, cache, work = tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    fault = make_fault(tmp_path, "enospc", skip=1)  # frame 2's write hits a full disk
    plate = tiny_plate(tmp_path / "plate", 3, seed=50)
    out = work / "m.####.exr"
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-3", "out": str(out),
           "io_threads": 1}
    worker = start_faulty(home, cache, fault, roots=[work])
    try:
        with worker.client() as client:
            failed = client.process(job)
            error = failed[-1]
            assert error["event"] == "error", failed
            assert "No space left on device" in error["error"]["message"]
            assert "matte.exr" in error["error"]["message"]  # the file that could not be written
            assert [e["frame"] for e in frame_events(failed)] == [1]
            assert not (work / "m.0002.exr").exists()
            # frame 3 (encoded beside frame 2) may have been written whole; never in part
            assert temp_leftovers(work) == [] and temp_leftovers(cache) == []
            assert writer_temps(cache) == []
            assert assert_cache_intact(cache) in (1, 2)
            # space is back: the same request now succeeds, frame 1 from the cache
            done = client.process(job)[-1]
    finally:
        worker.stop()
    assert done["event"] == "done" and done["cached"][0] == 1 and done["computed"][0] == 2
    assert sorted(done["cached"] + done["computed"]) == [1, 2, 3]
    assert all(read_exr(work / f"m.{f:04d}.exr").alpha.shape == (36, 64) for f in (1, 2, 3))


def test_when_the_disk_fills_while_the_cache_writes_its_manifest_then_cache_error_names_it(
        tmp_path, monkeypatch):
    cache = FrameCache(tmp_path / "cache")
    key = "ab" * 32
    real_write_text = Path.write_text

    def full_disk(self: Path, *args, **kwargs):
        if self.name == MANIFEST_NAME:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(CacheError, match="No space left on device"):
        with cache.writer(key) as writer:
            writer.path("matte.exr").write_bytes(b"pixels")
    monkeypatch.undo()
    assert cache.lookup(key) is None and writer_temps(cache.root) == []
    with cache.writer(key) as writer:
        writer.path("matte.exr").write_bytes(b"pixels")
    assert cache.lookup(key) is not None


def test_when_the_disk_fills_while_saving_the_recurrent_state_then_the_render_names_the_cause(
        tmp_path, monkeypatch):
    plate = tiny_plate(tmp_path / "plate", 2, seed=51)
    real_savez = np.savez

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    job = RenderJob(node=NODE, engine="rvm", plate=plate, frames="1-2",
                    cache_root=tmp_path / "cache")
    with pytest.raises(CacheError, match="No space left on device"):
        render(job)
    monkeypatch.setattr(np, "savez", real_savez)
    assert assert_cache_intact(tmp_path / "cache") == 0
    assert render(job).computed == [1, 2]


def corrupt_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))  # same size: only the digest can tell


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "garbage manifest",
                                    "state missing"])
def test_when_a_cache_entry_is_corrupted_on_disk_then_it_is_recomputed_never_served(
        tmp_path, damage):
    home, cache = tmp_path / "home", tmp_path / "cache"
    plate = tiny_plate(tmp_path / "plate", 2, seed=52)
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-2"}
    worker = start_worker(home, cache)
    try:
        with worker.client() as client:
            first = client.process(job)
            path = Path(frame_events(first)[1]["path"])  # frame 2's file in the cache
            good = read_exr(path).alpha.copy()
            entry = next(e for e in FrameCache(cache).entries() if e.metadata["frame"] == 2)
            if damage == "flipped bytes":
                corrupt_bytes(entry.files["matte.exr"])
            elif damage == "truncated":
                with open(entry.files["matte.exr"], "r+b") as stream:
                    stream.truncate(100)
            elif damage == "garbage manifest":
                (entry.folder / MANIFEST_NAME).write_text("{not json")
            else:
                entry.files["state.npz"].unlink()
            again = client.process(job)
    finally:
        worker.stop()
    done = again[-1]
    assert done["event"] == "done" and done["cached"] == [1] and done["computed"] == [2], again
    served = read_exr(frame_events(again)[1]["path"])
    np.testing.assert_array_equal(served.alpha, good)
    assert assert_cache_intact(cache) == 2
    assert "corrupt or incomplete" in (home / "worker.log").read_text()


@posix_only
def test_when_two_workers_race_on_one_cache_key_then_one_entry_is_written_and_both_serve_it(
        tmp_path):
    cache = tmp_path / "cache"
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        root.mkdir()
    fault = make_fault(tmp_path, "cache_hold")  # worker A holds the key's lock after writing
    plate = tiny_plate(tmp_path / "plate", 1, seed=53)
    job = {"node": NODE, "engine": "rvm", "plate": plate}
    worker_a = start_faulty(tmp_path / "home-a", cache, fault, roots=roots)
    worker_b = start_worker(tmp_path / "home-b", cache,
                            ["--allow-root", str(roots[0]), "--allow-root", str(roots[1])])
    results: dict[str, list] = {}
    try:
        with worker_a.client() as a, worker_b.client() as b:
            request_a = a.submit({**job, "out": str(roots[0] / "m.####.exr")})
            assert fault.reached()
            request_b = b.submit({**job, "out": str(roots[1] / "m.####.exr")})
            thread = threading.Thread(target=lambda: results.update(b=b.events(request_b)))
            thread.start()
            # B computes the frame too, then waits on the key's lock that A holds
            assert wait_for(lambda: b_waits_on_lock(worker_b, cache), timeout=30)
            assert not (roots[1] / "m.exr").exists() and thread.is_alive()
            fault.let_go()
            results["a"] = a.events(request_a)
            thread.join(60)
    finally:
        fault.let_go()
        worker_a.stop()
        worker_b.stop()
    assert results["a"][-1]["event"] == "done" and results["b"][-1]["event"] == "done"
    path_a = Path(frame_events(results["a"])[0]["path"])
    path_b = Path(frame_events(results["b"])[0]["path"])
    assert path_a.stat().st_ino == path_b.stat().st_ino  # B served A's entry, wrote none
    assert assert_cache_intact(cache) == 1 and writer_temps(cache) == []


def b_waits_on_lock(worker, cache: Path) -> bool:
    """Worker B's request is running, has no frame yet, and the key's lock file exists."""
    with worker.client() as probe:
        queue = probe.request("status")["queue"]
    return (bool(queue) and queue[0]["state"] == "running" and queue[0]["done"] == 0
            and any((cache / "locks").glob("*.lock")) and len(writer_temps(cache)) == 1)


@pytest.mark.parametrize("when", ["before any reply", "after the first frame"])
def test_when_a_client_disconnects_mid_stream_then_the_worker_drops_it_and_serves_the_next(
        tmp_path, when):
    home, cache = tmp_path / "home", tmp_path / "cache"
    plate = tiny_plate(tmp_path / "plate", 8, seed=54)
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-8"}
    worker = start_worker(home, cache)
    try:
        leaving = worker.client(name="leaving")
        leaving.submit(job)
        if when == "after the first frame":
            while leaving.recv().get("event") != "frame":
                pass
        # a reset, not a polite close: the worker's next send fails
        leaving.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaving.close()
        with worker.client() as other:
            assert wait_for(lambda: other.request("status")["queue"] == [], timeout=30)
            assert other.request("status")["clients"] == 1
            events = other.process(job)
    finally:
        worker.stop()
    assert events[-1]["event"] == "done" and len(frame_events(events)) == 8
    for event in frame_events(events):
        assert read_exr(event["path"]).alpha.shape == (36, 64)
    assert assert_cache_intact(cache) == 8 and writer_temps(cache) == []


@posix_only
def test_when_a_request_times_out_then_the_client_says_the_worker_is_silent_and_it_recovers(
        tmp_path):
    home, cache = tmp_path / "home", tmp_path / "cache"
    fault = make_fault(tmp_path, "frame")  # the engine hangs on the first frame
    plate = tiny_plate(tmp_path / "plate", 2, seed=55)
    job = {"node": NODE, "engine": "rvm", "plate": plate, "frames": "1-2"}
    worker = start_faulty(home, cache, fault)
    client_module = host_client_module()
    host = client_module.WorkerClient(home=home, spawn=False, request_timeout=1.0,
                                      client_name="impatient")
    try:
        with pytest.raises(client_module.WorkerUnavailable) as caught:
            host.process(job)
        assert fault.marker.exists()
        assert f"worker (pid {worker.process.pid}) sent nothing for 1 s" in str(caught.value)
        fault.let_go()  # the stuck frame ends; its request was cancelled when the client left
        with worker.client() as client:
            assert wait_for(lambda: client.request("status")["queue"] == [], timeout=30)
        patient = client_module.WorkerClient(home=home, spawn=False, request_timeout=60)
        done = patient.process(job)
    finally:
        fault.let_go()
        worker.stop()
    assert done["frames"] == 2
    assert assert_cache_intact(cache) == 2 and writer_temps(cache) == []


LIMITED_RENDER = """
import resource, signal, sys
from mattekit.inference.errors import MattekitError
from mattekit.inference.render import RenderJob, render
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
try:
    render(RenderJob(node="video-matte", engine="rvm", plate=sys.argv[1], cache_root=sys.argv[2],
                     out=sys.argv[3]))
except MattekitError as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""


@posix_only
def test_when_the_os_refuses_writes_past_a_size_limit_then_the_error_names_it_and_nothing_is_out(
        tmp_path):
    plate = tiny_plate(tmp_path / "plate", 1, seed=56)
    cache, out = tmp_path / "cache", tmp_path / "out" / "m.####.exr"
    limited = subprocess.run([sys.executable, "-c", LIMITED_RENDER, plate, str(cache), str(out)],
                             capture_output=True, text=True, timeout=120)
    assert limited.returncode == 1, limited.stderr
    assert "File too large" in limited.stdout and str(cache) in limited.stdout
    assert not (tmp_path / "out" / "m.0001.exr").exists()
    assert temp_leftovers(tmp_path / "out") == [] and writer_temps(cache) == []
    assert assert_cache_intact(cache) == 0
    report = render(RenderJob(node=NODE, engine="rvm", plate=plate, cache_root=cache,
                              out=str(out)))
    assert report.computed == [1] and read_exr(tmp_path / "out" / "m.0001.exr").alpha is not None
