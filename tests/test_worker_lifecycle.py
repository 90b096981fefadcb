"""The worker's life: private home and token, loopback only, start/status/stop, idle unload,
shutdown in the middle of a render."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from worker_helpers import make_plate, start_worker, wait_for, worker_env

from mattekit.inference.worker.security import inside_roots, is_loopback, resolved_roots

POSIX = os.name == "posix"


@pytest.fixture
def worker(tmp_path):
    worker = start_worker(tmp_path / "home", tmp_path / "cache", ["--idle-timeout", "0.3"])
    yield worker
    worker.stop()


def non_loopback_address() -> str:
    """This machine's address on its default route, or '' when it has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 9))  # UDP: no packet is sent
            address = probe.getsockname()[0]
    except OSError:
        return ""
    return "" if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_when_the_worker_creates_its_home_then_home_is_0700_and_token_0600(worker):
    assert stat.S_IMODE(worker.home.stat().st_mode) == 0o700
    token = worker.home / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) == 64


def test_when_the_worker_listens_then_only_loopback_is_bound(worker):
    proc_tcp = Path("/proc/net/tcp")
    if proc_tcp.exists():
        listening = [line.split() for line in proc_tcp.read_text().splitlines()[1:]]
        mine = [fields[1] for fields in listening
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == worker.port]
        assert mine == ["0100007F:%04X" % worker.port]
    address = non_loopback_address()
    if not address:
        pytest.skip("this machine has no non-loopback address")
    with pytest.raises(OSError):
        socket.create_connection((address, worker.port), timeout=2).close()


def test_when_checking_peers_then_only_loopback_addresses_pass():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.3.4.5")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.5") and not is_loopback("0.0.0.0")
    assert not is_loopback("not an address")


def test_when_a_path_climbs_out_with_dots_then_it_is_outside_the_roots(tmp_path):
    roots = resolved_roots([tmp_path / "root"])
    (tmp_path / "root").mkdir()
    assert inside_roots(tmp_path / "root" / "a" / "b", roots)
    assert not inside_roots(tmp_path / "root" / ".." / "other", roots)
    assert not inside_roots(Path("relative/path"), roots)


def test_when_engines_sit_idle_past_the_timeout_then_they_are_unloaded(worker, tmp_path):
    with worker.client() as client:
        events = client.process({"node": "video-matte", "plate": make_plate(tmp_path / "p", 1,
                                                                            seed=20)})
        assert events[-1]["event"] == "done"
        assert wait_for(lambda: client.request("status")["models_loaded"] == [], timeout=5)
        events = client.process({"node": "video-matte", "plate": make_plate(tmp_path / "q", 1,
                                                                            seed=21)})
        assert events[-1]["event"] == "done"  # and a new engine is made on demand


def test_when_shut_down_mid_render_then_the_stream_ends_cancelled_and_worker_json_goes(
        worker, tmp_path):
    plate = make_plate(tmp_path / "plate", 12, seed=22)
    with worker.client(name="renderer") as renderer, worker.client(name="admin") as admin:
        request_id = renderer.submit({"node": "video-matte", "plate": plate, "frames": "1-12"})
        while renderer.recv().get("event") != "frame":
            pass
        assert admin.request("shutdown") == {"id": "r1", "ok": True}
        final = renderer.events(request_id)[-1]
        assert final["event"] == "error" and final["error"]["code"] == "cancelled"
        assert worker.process.wait(timeout=30) == 0
    assert not (worker.home / "worker.json").exists()


def test_when_started_detached_then_status_reports_it_a_second_start_is_a_noop_and_stop_ends_it(
        tmp_path):
    home, cache = tmp_path / "home", tmp_path / "cache"
    env = worker_env(home, cache)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mattekit.inference.worker", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    status = cli("status")
    assert status.returncode == 1 and "no mattekit worker is running" in status.stderr
    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads((home / "worker.json").read_text())
        assert f"listening on 127.0.0.1:{info['port']}" in started.stdout
        again = cli("start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert json.loads((home / "worker.json").read_text())["pid"] == info["pid"]
        status = cli("status")
        assert status.returncode == 0, status.stderr
        assert f"mattekit worker {info['pid']}" in status.stdout and "queue: empty" in status.stdout
        stopped = cli("stop")
        assert stopped.returncode == 0
        assert f"stopped mattekit worker {info['pid']}" in stopped.stdout
        assert not (home / "worker.json").exists()
    finally:
        info_path = home / "worker.json"
        if info_path.exists() and POSIX:
            os.kill(json.loads(info_path.read_text())["pid"], 9)


def test_when_two_workers_start_for_one_home_then_the_second_is_a_noop(worker):
    second = subprocess.run(
        [sys.executable, "-m", "mattekit.inference.worker", "start", "--foreground"],
        env=worker_env(worker.home, worker.cache), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "already running" in second.stdout + second.stderr
    assert json.loads((worker.home / "worker.json").read_text())["pid"] == worker.process.pid


def test_when_many_connections_race_then_each_gets_its_own_replies(worker):
    failures = []

    def hammer(index: int) -> None:
        try:
            with worker.client(name=f"c{index}") as client:
                for _ in range(20):
                    if client.request("ping").get("op") != "pong":
                        failures.append(index)
        except (OSError, EOFError) as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
