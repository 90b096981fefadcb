"""The host client (plugin/mattekit_host) against the real worker process.

Every test gets its own worker home (MATTEKIT_HOME) and cache (MATTEKIT_CACHE) under tmp_path;
the client starts the worker itself with this interpreter, exactly as Nuke would with
$MATTEKIT_PYTHON. Teardown stops (or kills) whatever worker a test left running.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugin"
if str(PLUGIN) not in sys.path:
    sys.path.insert(0, str(PLUGIN))

from mattekit_host import paths  # noqa: E402
from mattekit_host.client import WorkerClient  # noqa: E402
from mattekit_host.errors import (  # noqa: E402
    MattekitHostError,
    WorkerError,
    WorkerUnavailable,
)

from mattekit.inference.cache import FrameCache  # noqa: E402
from mattekit.inference.exrio import read_exr, write_exr  # noqa: E402

NODE = "video-matte"
POSIX = os.name == "posix"


# -- fixtures and helpers -------------------------------------------------------------------------

def write_plate(folder: Path, count: int, width: int = 96, height: int = 64,
                seed: int = 0) -> str:
    """A small scene-linear EXR sequence (frames 1..count) with a moving blob; its pattern."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = rng.random(3).astype(np.float32) * 0.3
    for i in range(count):
        cx, cy = width * (0.35 + 0.01 * i), height * 0.5
        blob = np.exp(-(((xx - cx) / (width * 0.15)) ** 2 + ((yy - cy) / (height * 0.3)) ** 2))
        rgb = background + 0.7 * blob[..., None] * np.array([0.9, 0.6, 0.5], np.float32)
        noise = rng.random((height, width, 3)).astype(np.float32) * 0.02
        write_exr(folder / f"plate.{i + 1:04d}.exr", (rgb + noise).astype(np.float32),
                  pixel_type="half")
    return str(folder / "plate.####.exr")


def worker_pid(home: Path):
    info = paths.read_worker_info(home)
    return None if info is None else info.get("pid")


def pid_alive(pid: int) -> bool:
    if not POSIX:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own dead child) counts as dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            return stream.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def env(tmp_path, monkeypatch):
    """MATTEKIT_HOME / MATTEKIT_CACHE under tmp_path; stops any worker left at teardown."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    monkeypatch.setenv("MATTEKIT_HOME", str(home))
    monkeypatch.setenv("MATTEKIT_CACHE", str(cache))
    monkeypatch.setenv("MATTEKIT_PYTHON", sys.executable)
    monkeypatch.delenv("MATTEKIT_WORK_ROOTS", raising=False)
    started: list[int] = []
    yield {"home": home, "cache": cache, "started": started}
    pids = set(started)
    pid = worker_pid(home)
    if pid is not None:
        pids.add(pid)
        try:
            WorkerClient(home=home, spawn=False, start_timeout=5).shutdown()
        except MattekitHostError:
            pass
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL if POSIX else signal.SIGTERM)
            except ProcessLookupError:  # it finished exiting between the check and the kill
                pass


@pytest.fixture
def client(env):
    with WorkerClient(python=sys.executable, start_timeout=30, request_timeout=60,
                      client_name="pytest host client") as worker_client:
        yield worker_client


def kinds(events):
    return [e["event"] for e in events]


# -- paths ----------------------------------------------------------------------------------------

def test_when_no_home_is_set_then_it_is_dot_mattekit_in_the_user_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MATTEKIT_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    home = paths.mattekit_home()
    assert home == tmp_path / ".mattekit" and home.is_dir()
    if POSIX:
        assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_when_two_threads_create_the_token_then_both_get_the_same_private_token(env):
    home = env["home"]
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(paths.read_or_create_token(home)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert len(tokens[0]) == 64 and all(c in "0123456789abcdef" for c in tokens[0])
    assert (home / "token").read_text().strip() == tokens[0]
    if POSIX:
        assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600
        assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_when_mattekit_python_is_not_set_then_the_error_says_to_run_the_installer(env,
                                                                                  monkeypatch):
    monkeypatch.delenv("MATTEKIT_PYTHON", raising=False)
    with pytest.raises(WorkerUnavailable, match="install.py --nuke"):
        paths.worker_python()
    with pytest.raises(WorkerUnavailable, match="MATTEKIT_PYTHON"):
        WorkerClient(start_timeout=5).hello()
    monkeypatch.setenv("MATTEKIT_PYTHON", "/opt/mattekit/.venv/bin/python")
    assert paths.worker_python() == "/opt/mattekit/.venv/bin/python"


# -- starting, attaching, simple calls -----------------------------------------------------------

def test_when_no_worker_runs_then_the_client_starts_one_and_a_second_client_attaches_to_it(
        env, client):
    home = env["home"]
    assert not (home / "worker.json").exists()
    hello = client.hello()
    assert hello["ok"] is True and hello["protocol"] == 1 and hello["version"]
    assert Path(hello["cache_root"]) == env["cache"].resolve()
    assert hello["pid"] == worker_pid(home) and pid_alive(hello["pid"])
    assert client.ping()["op"] == "pong"
    models = client.models()
    assert models["nodes"][NODE] == "rvm-guided"
    rvm = next(e for e in models["engines"] if e["name"] == "rvm")
    assert rvm["installed"] is True and rvm["licence"] == "GPL-3.0"

    other = WorkerClient(spawn=False, client_name="second session")
    assert other.hello()["pid"] == hello["pid"]
    status = other.status()
    assert status["pid"] == hello["pid"] and status["queue"] == []
    assert (home / "token").read_text().strip() == paths.read_or_create_token(home)


def test_when_two_clients_start_the_worker_at_once_then_one_worker_serves_both(env):
    barrier = threading.Barrier(3)
    pids: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait(10)
        try:
            pids.append(WorkerClient(python=sys.executable, start_timeout=30).hello()["pid"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert errors == [] and len(pids) == 3
    assert len(set(pids)) == 1 and pids[0] == worker_pid(env["home"])
    # the two other starts stood down ("already starting or running") instead of serving
    output = env["home"] / "worker.out"
    assert wait_for(lambda: output.read_text().count("already") == 2, 20), output.read_text()
    assert output.read_text().count("listening on") == 1, output.read_text()


def test_when_worker_json_is_stale_then_the_client_starts_a_fresh_worker(env, client):
    home = env["home"]
    home.mkdir(parents=True, exist_ok=True)
    (home / "worker.json").write_text(json.dumps(
        {"pid": 999999, "host": "127.0.0.1", "port": 9, "version": "0.1.0", "protocol": 1,
         "started": 0.0}))
    hello = client.hello()
    assert hello["pid"] != 999999 and worker_pid(home) == hello["pid"]


def test_when_spawning_is_off_and_no_worker_runs_then_unavailable_says_how_to_start_one(env):
    with pytest.raises(WorkerUnavailable, match="mattekit worker start"):
        WorkerClient(spawn=False).ping()
    assert not (env["home"] / "worker.json").exists()


def test_when_the_python_does_not_exist_then_unavailable_comes_quickly_and_names_it(env):
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable) as caught:
        WorkerClient(python="/nonexistent/python", start_timeout=30).hello()
    assert time.monotonic() - started < 5.0
    message = str(caught.value)
    assert "/nonexistent/python" in message and "MATTEKIT_PYTHON" in message
    assert "\n" not in message


@pytest.mark.skipif(not POSIX, reason="the fake interpreter is a shell script")
def test_when_the_worker_exits_at_start_then_unavailable_quotes_its_last_words(env, tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named mattekit' >&2\n"
                    "exit 3\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable) as caught:
        WorkerClient(python=str(fake), start_timeout=30).hello()
    assert time.monotonic() - started < 5.0
    message = str(caught.value)
    assert "status 3" in message and "No module named mattekit" in message
    assert str(env["home"] / "worker.out") in message


@pytest.mark.skipif(not POSIX, reason="the fake interpreter is a shell script")
def test_when_the_worker_never_listens_then_unavailable_after_the_start_timeout(env, tmp_path):
    fake = tmp_path / "slow-python"
    pid_file = tmp_path / "slow.pid"
    fake.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec sleep 30\n")
    fake.chmod(0o755)
    started = time.monotonic()
    try:
        with pytest.raises(WorkerUnavailable) as caught:
            WorkerClient(python=str(fake), start_timeout=1.0).hello()
        elapsed = time.monotonic() - started
    finally:
        if wait_for(pid_file.exists, 2):
            env["started"].append(int(pid_file.read_text()))
    assert 1.0 <= elapsed < 4.0
    assert "did not start within 1 s" in str(caught.value)
    assert str(fake) in str(caught.value) and "worker.log" in str(caught.value)


# -- process --------------------------------------------------------------------------------------

def test_when_processing_three_frames_then_events_arrive_in_order_and_done_has_three(
        env, client, tmp_path):
    plate = write_plate(tmp_path / "plate", 3)
    out = env["cache"] / "shots" / "matte.####.exr"
    events: list[dict] = []
    done = client.process({"node": NODE, "plate": plate, "frames": "1-3", "out": str(out)},
                          on_event=events.append)
    assert kinds(events) == ["queued", "started", "frame", "frame", "frame"], events
    assert events[1]["total"] == 3
    frames = [e for e in events if e["event"] == "frame"]
    assert [f["frame"] for f in frames] == [1, 2, 3]
    assert [f["done"] for f in frames] == [1, 2, 3]
    assert done["event"] == "done" and done["ok"] is True and done["frames"] == 3
    assert done["computed"] == [1, 2, 3] and done["engine"] == "rvm-guided"
    for frame in frames:
        image = read_exr(frame["path"])
        assert image.alpha is not None and image.alpha.shape == (64, 96)


def test_when_the_plate_is_missing_then_worker_error_input_error_names_the_file(
        env, client, tmp_path):
    missing = tmp_path / "nowhere" / "plate.####.exr"
    with pytest.raises(WorkerError) as caught:
        client.process({"node": NODE, "plate": str(missing), "frames": "1-3"})
    assert caught.value.code == "input_error"
    assert str(tmp_path / "nowhere") in str(caught.value)
    assert str(caught.value) == caught.value.message


def test_when_a_frame_of_the_plate_is_missing_then_the_error_names_that_frame(
        env, client, tmp_path):
    plate = write_plate(tmp_path / "plate", 2)
    with pytest.raises(WorkerError) as caught:
        client.process({"node": NODE, "plate": plate, "frames": "1-3"})
    assert caught.value.code == "input_error"
    assert "3" in str(caught.value) and "plate" in str(caught.value)


def test_when_the_output_is_outside_the_allowed_roots_then_forbidden_path(env, client, tmp_path):
    plate = write_plate(tmp_path / "plate", 1)
    with pytest.raises(WorkerError) as caught:
        client.process({"node": NODE, "plate": plate, "frames": "1",
                        "out": str(tmp_path / "elsewhere" / "m.####.exr")})
    assert caught.value.code == "forbidden_path"


def test_when_cancel_is_set_mid_render_then_worker_error_cancelled_and_the_worker_goes_on(
        env, client, tmp_path):
    plate = write_plate(tmp_path / "plate", 40, 160, 120)
    cancel = threading.Event()
    frames: list[int] = []

    def on_event(event: dict) -> None:
        if event["event"] == "frame":
            frames.append(event["frame"])
            cancel.set()

    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        client.process({"node": NODE, "plate": plate, "frames": "1-40"}, on_event=on_event,
                       cancel=cancel)
    assert caught.value.code == "cancelled"
    assert 1 <= len(frames) < 40
    assert time.monotonic() - started < 30
    assert wait_for(lambda: client.status()["queue"] == [], 10)
    assert client.ping()["ok"] is True


def test_when_cancel_is_already_set_then_nothing_is_sent(env, client, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(WorkerError) as caught:
        client.process({"node": NODE, "plate": str(tmp_path / "p.####.exr")}, cancel=cancel)
    assert caught.value.code == "cancelled"
    assert not (env["home"] / "worker.json").exists()  # not even started


@pytest.mark.parametrize("kill_after", [1, 12])
def test_when_the_worker_is_killed_mid_request_then_the_client_restarts_it_and_finishes(
        env, client, tmp_path, kill_after):
    """MUST SHOW: SIGKILL of the worker after a frame event; the client restarts it, resends
    the job, and the cache and the output folder hold only complete, valid EXRs."""
    if not POSIX:
        pytest.skip("SIGKILL is POSIX")
    count = 30
    plate = write_plate(tmp_path / "plate", count, 320, 240, seed=7)
    out_dir = env["cache"] / "out"
    first_pid = client.hello()["pid"]
    env["started"].append(first_pid)
    events: list[dict] = []
    killed: list[int] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "frame" and event["done"] >= kill_after and not killed:
            pid = worker_pid(env["home"])
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    done = client.process({"node": NODE, "plate": plate, "frames": f"1-{count}",
                           "out": str(out_dir / "matte.####.exr")}, on_event=on_event)

    assert killed == [first_pid]
    assert not pid_alive(first_pid)
    new_pid = client.hello()["pid"]
    env["started"].append(new_pid)
    assert new_pid != first_pid and pid_alive(new_pid)
    # the stream started over after the restart, and the job finished
    assert kinds(events).count("started") == 2
    assert done["event"] == "done" and done["ok"] is True and done["frames"] == count
    assert sorted(done["computed"] + done["cached"]) == list(range(1, count + 1))
    # the frames finished before the kill are cache hits now, nothing is computed twice
    assert set(range(1, kill_after + 1)) <= set(done["cached"])
    last_run = events[len(events) - 1 - kinds(events)[::-1].index("started"):]
    assert [e["frame"] for e in last_run if e["event"] == "frame"] == list(range(1, count + 1))

    # every cache entry is complete and every EXR in it reads back
    cache_root = env["cache"]
    entries = FrameCache(cache_root).entries()
    assert len(entries) >= count
    exr_count = 0
    for entry in entries:
        assert FrameCache(cache_root).lookup(entry.key, verify=True) is not None, entry.key
        for file in entry.folder.iterdir():
            if file.suffix == ".exr":
                image = read_exr(file)
                assert image.alpha is not None and image.alpha.shape == (240, 320)
                exr_count += 1
    assert exr_count == len(entries)
    # no temp file anywhere outside the cache's own tmp/ (where the next gc sweeps)
    leftovers = [p for p in cache_root.rglob("*") if p.is_file()
                 and "tmp" not in p.relative_to(cache_root).parts[:1]
                 and (p.name.startswith(".") or ".tmp" in p.name)]
    assert leftovers == []
    # the output folder holds exactly the 30 frames, each a valid EXR
    outputs = sorted(out_dir.iterdir())
    assert [p.name for p in outputs] == [f"matte.{f:04d}.exr" for f in range(1, count + 1)]
    for path in outputs:
        image = read_exr(path)
        assert image.alpha is not None and image.alpha.shape == (240, 320)
        assert np.isfinite(image.alpha).all()


def test_when_the_worker_dies_again_after_the_restart_then_unavailable_names_both(
        env, client, tmp_path):
    if not POSIX:
        pytest.skip("SIGKILL is POSIX")
    plate = write_plate(tmp_path / "plate", 30, 160, 120)
    killed: list[int] = []

    def on_event(event: dict) -> None:
        if event["event"] == "frame" and len(killed) < 2:
            pid = worker_pid(env["home"])
            if pid not in killed:
                killed.append(pid)
                env["started"].append(pid)
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerUnavailable) as caught:
        client.process({"node": NODE, "plate": plate, "frames": "1-30"}, on_event=on_event)
    assert len(killed) == 2 and killed[0] != killed[1]
    message = str(caught.value)
    assert "restarted" in message and "giving up" in message and "worker.log" in message
    assert str(killed[0]) in message and str(killed[1]) in message


# -- shutdown and close ---------------------------------------------------------------------------

def test_when_shutdown_is_called_then_the_worker_exits_and_worker_json_is_gone(env, client):
    pid = client.hello()["pid"]
    client.shutdown()
    assert not (env["home"] / "worker.json").exists()
    assert wait_for(lambda: not pid_alive(pid), 10)
    client.shutdown()  # nothing running: a no-op, and it does not start one
    assert not (env["home"] / "worker.json").exists()


def test_when_the_client_is_closed_then_calls_fail_and_the_worker_keeps_running(env):
    client = WorkerClient(python=sys.executable, start_timeout=30)
    pid = client.hello()["pid"]
    client.close()
    with pytest.raises(MattekitHostError, match="closed"):
        client.ping()
    assert pid_alive(pid)
    assert WorkerClient(spawn=False).ping()["ok"] is True


def test_when_on_event_raises_then_the_error_propagates_and_the_request_is_dropped(
        env, client, tmp_path):
    plate = write_plate(tmp_path / "plate", 40, 160, 120)

    def on_event(event: dict) -> None:
        if event["event"] == "frame":
            raise RuntimeError("the node was deleted")

    with pytest.raises(RuntimeError, match="the node was deleted"):
        client.process({"node": NODE, "plate": plate, "frames": "1-40"}, on_event=on_event)
    assert wait_for(lambda: client.status()["queue"] == [], 10)


def test_when_the_token_does_not_match_then_unavailable_says_to_restart_the_worker(env, client):
    client.hello()
    (env["home"] / "token").write_text("0" * 64)
    with pytest.raises(WorkerUnavailable) as caught:
        client.ping()
    assert "refused this client" in str(caught.value)
    assert str(env["home"] / "token") in str(caught.value)


def test_when_the_worker_goes_silent_then_unavailable_after_the_request_timeout(env, tmp_path):
    """A fake worker that says hello and then never answers: every wait is bounded."""
    home = env["home"]
    home.mkdir(parents=True, exist_ok=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)
            conn.makefile("rb").readline()
            conn.sendall(json.dumps({"op": "hello", "ok": True, "version": "0.1.0",
                                     "protocol": 1, "pid": os.getpid(),
                                     "cache_root": str(tmp_path)}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    (home / "worker.json").write_text(json.dumps({"pid": os.getpid(), "host": "127.0.0.1",
                                                  "port": port, "version": "0.1.0",
                                                  "protocol": 1, "started": 0.0}))
    try:
        silent = WorkerClient(spawn=False, request_timeout=0.5)
        assert silent.hello()["pid"] == os.getpid()
        started = time.monotonic()
        with pytest.raises(WorkerUnavailable, match="sent nothing for 0.5 s"):
            silent.ping()
        with pytest.raises(WorkerUnavailable, match="worker.log"):
            silent.process({"node": NODE, "plate": str(tmp_path / "p.####.exr")})
        assert time.monotonic() - started < 5.0
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
        (home / "worker.json").unlink()
