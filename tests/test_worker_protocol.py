"""The worker protocol end to end: a real worker subprocess, real sockets, real renders."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from worker_helpers import Client, make_plate, start_worker_in, wait_for

from mattekit.inference.exrio import read_exr
from mattekit.inference.render import RenderJob, render

NODE = "video-matte"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    worker = start_worker_in(tmp_path_factory.mktemp("worker"))
    yield worker
    worker.stop()


@pytest.fixture
def client(worker):
    with worker.client() as connection:
        yield connection


def frames_of(events):
    return [e for e in events if e.get("event") == "frame"]


def test_when_pinged_then_pong_carries_version_and_protocol(client):
    reply = client.request("ping")
    assert reply["ok"] is True and reply["op"] == "pong"
    assert reply["version"] == "0.1.0" and reply["protocol"] == 1


def test_when_saying_hello_then_the_reply_names_pid_and_cache_root(worker, client):
    assert client.hello_reply["pid"] == worker.process.pid
    assert Path(client.hello_reply["cache_root"]) == worker.cache.resolve()


def test_when_listing_models_then_rvm_is_installed_and_every_node_has_its_engine(client):
    reply = client.request("models")
    assert reply["ok"] is True
    rvm = next(e for e in reply["engines"] if e["name"] == "rvm")
    assert rvm["installed"] is True and rvm["licence"] == "GPL-3.0"
    assert rvm["sha256"].startswith("88d4531297")
    assert reply["nodes"]["video-matte"] == "rvm-guided"
    assert reply["nodes"]["background-matte"] == "cleanplate"
    assert reply["nodes"]["parallax-matte"] == "parallax"
    assert reply["nodes"]["sparse-4k-refine"] == "sparse-refine"


def test_when_processing_a_sequence_then_frames_stream_in_order_then_done_and_a_rerun_hits(
        worker, client, tmp_path):
    plate = make_plate(tmp_path / "plate", 3, seed=1)
    out = worker.work / "seq" / "matte.####.exr"
    job = {"node": NODE, "plate": plate, "frames": "1-3", "out": str(out)}
    events = client.process(job)
    kinds = [e["event"] for e in events]
    assert kinds == ["queued", "started", "frame", "frame", "frame", "done"], events
    assert events[1]["total"] == 3
    frames = frames_of(events)
    assert [f["frame"] for f in frames] == [1, 2, 3]
    assert [f["done"] for f in frames] == [1, 2, 3]
    assert not any(f["cache_hit"] for f in frames)
    for f in frames:
        assert Path(f["path"]).is_file() and Path(f["path"]).parent == out.parent
    done = events[-1]
    assert done["ok"] is True and done["computed"] == [1, 2, 3] and done["cached"] == []
    assert done["engine"] == "rvm-guided" and done["frames"] == 3

    again = client.process(job)
    assert all(f["cache_hit"] for f in frames_of(again)) and len(frames_of(again)) == 3
    assert again[-1]["cached"] == [1, 2, 3] and again[-1]["computed"] == []


def test_when_no_out_is_given_then_results_stay_in_the_cache(worker, client, tmp_path):
    plate = make_plate(tmp_path / "plate", 1, seed=2)
    events = client.process({"node": NODE, "plate": plate})
    assert events[-1]["event"] == "done", events
    path = Path(frames_of(events)[0]["path"])
    assert path.is_file() and worker.cache.resolve() in path.resolve().parents


def test_when_two_clients_submit_then_both_match_render_and_the_short_one_is_not_starved(
        worker, tmp_path):
    plate_a = make_plate(tmp_path / "a", 12, seed=3)
    plate_b = make_plate(tmp_path / "b", 1, seed=4)
    job_a = {"node": NODE, "plate": plate_a, "frames": "1-12",
             "out": str(worker.work / "a" / "m.####.exr")}
    job_b = {"node": NODE, "plate": plate_b, "frames": "1",
             "out": str(worker.work / "b" / "m.####.exr")}
    order: list[tuple[str, str]] = []
    lock = threading.Lock()
    results: dict[str, list] = {}
    a_started = threading.Event()

    def run(name, job, connection):
        request_id = connection.submit(job)
        events = []
        while True:
            event = connection.recv()
            if event.get("id") != request_id:
                continue
            events.append(event)
            with lock:
                order.append((name, event["event"]))
            if event["event"] == "frame":
                a_started.set()
            if event["event"] in ("done", "error"):
                break
        results[name] = events

    with worker.client(name="A") as a, worker.client(name="B") as b:
        thread_a = threading.Thread(target=run, args=("A", job_a, a))
        thread_a.start()
        assert a_started.wait(30)
        run("B", job_b, b)
        thread_a.join(60)
    assert results["A"][-1]["event"] == "done", results["A"]
    assert results["B"][-1]["event"] == "done", results["B"]
    assert results["B"][0] == {"id": results["B"][0]["id"], "event": "queued", "position": 1}
    # B was submitted while A ran, and finished while A still had frames to go
    b_done = order.index(("B", "done"))
    a_frames_before_b_done = sum(1 for name, kind in order[:b_done] if (name, kind) ==
                                 ("A", "frame"))
    assert a_frames_before_b_done <= 8, order
    assert order.index(("B", "done")) < order.index(("A", "done"))

    for name, job, first_frames in (("A", job_a, 12), ("B", job_b, 1)):
        reference = render(RenderJob(node=NODE, plate=job["plate"], frames=job["frames"],
                                     cache_root=tmp_path / f"ref-cache-{name}"))
        served = frames_of(results[name])
        assert len(served) == first_frames == len(reference.frames)
        for got, want in zip(served, reference.frames):
            np.testing.assert_array_equal(read_exr(got["path"]).alpha, read_exr(want.path).alpha)


def test_when_the_out_path_is_outside_the_roots_then_forbidden_path(client, tmp_path):
    plate = make_plate(tmp_path / "plate", 1, seed=5)
    outside = tmp_path / "elsewhere" / "m.####.exr"
    events = client.process({"node": NODE, "plate": plate, "out": str(outside)})
    assert events[-1]["event"] == "error"
    assert events[-1]["error"]["code"] == "forbidden_path"
    assert not outside.parent.exists()


def test_when_a_symlink_inside_a_root_points_outside_then_forbidden_path(worker, client,
                                                                          tmp_path):
    plate = make_plate(tmp_path / "plate", 1, seed=6)
    target = tmp_path / "outside"
    target.mkdir()
    link = worker.work / f"escape-{os.getpid()}"
    link.symlink_to(target, target_is_directory=True)
    events = client.process({"node": NODE, "plate": plate, "out": str(link / "m.####.exr")})
    assert events[-1]["error"]["code"] == "forbidden_path"
    assert list(target.iterdir()) == []


def test_when_a_plate_frame_is_missing_then_input_error_names_the_file_and_worker_goes_on(
        client, tmp_path):
    plate = make_plate(tmp_path / "plate", 3, seed=7)
    (tmp_path / "plate" / "plate.0002.exr").unlink()
    events = client.process({"node": NODE, "plate": plate, "frames": "1-3"})
    error = events[-1]
    assert error["event"] == "error" and error["ok"] is False
    assert error["error"]["code"] == "input_error"
    assert "plate.####.exr" in error["error"]["message"] and "2" in error["error"]["message"]
    assert client.request("ping")["ok"] is True


@pytest.mark.parametrize("job, field", [
    ({"node": NODE, "plate": "/x/p.####.exr", "frames": 5}, "frames"),
    ({"node": NODE, "plate": "/x/p.####.exr", "bogus": 1}, "bogus"),
    ({"node": NODE, "plate": "/x/p.####.exr", "cache_root": "/tmp"}, "cache_root"),
    ({"node": NODE}, "plate"),
    ({"node": NODE, "plate": "relative/p.####.exr"}, "plate"),
    ({"node": NODE, "plate": "/x/p.####.exr", "params": []}, "params"),
    ({"node": NODE, "plate": "/x/p.####.exr", "io_threads": True}, "io_threads"),
    ({"node": NODE, "plate": "/x/p.####.exr", "device": "tpu"}, "device"),
    ({"node": "sparse-4k-refine", "plate": "/x/p.####.exr", "coarse": "rel/c.exr"}, "coarse"),
])
def test_when_a_job_field_is_wrong_then_bad_request_names_it(client, job, field):
    events = client.process(job)
    assert len(events) == 1 and events[0]["ok"] is False
    assert events[0]["error"]["code"] == "bad_request"
    assert f"'{field}'" in events[0]["error"]["message"]


def test_when_a_line_is_not_json_then_bad_request_and_the_connection_still_serves(client):
    client.send_raw(b"{this is not json\n")
    reply = client.recv()
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert client.request("ping")["ok"] is True


def test_when_the_op_is_unknown_then_bad_request_and_the_connection_still_serves(client):
    reply = client.request("fly")
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert "fly" in reply["error"]["message"]
    assert client.request("ping")["ok"] is True


def test_when_a_line_exceeds_one_mebibyte_then_message_too_large_and_closed(worker, client):
    client.send_raw(b'{"id": "big", "op": "ping", "pad": "' + b"x" * (1 << 20) + b'"}\n')
    reply = client.recv()
    assert reply["ok"] is False and reply["error"]["code"] == "message_too_large"
    assert client.closed_by_peer()
    with worker.client() as fresh:
        assert fresh.request("ping")["ok"] is True


def test_when_cancelled_mid_range_then_the_stream_ends_cancelled_with_frames_kept(
        client, tmp_path):
    plate = make_plate(tmp_path / "plate", 12, seed=9)
    request_id = client.submit({"node": NODE, "plate": plate, "frames": "1-12"})
    frames = []
    while True:
        event = client.recv()
        if event.get("event") == "frame":
            frames.append(event)
            break
    client.send({"id": "c1", "op": "cancel", "target": request_id})
    cancel_reply = None
    while True:
        message = client.recv()
        if message.get("id") == "c1":
            cancel_reply = message
        elif message.get("event") == "frame":
            frames.append(message)
        elif message.get("event") == "error":
            final = message
            break
    assert cancel_reply == {"id": "c1", "ok": True, "cancelled": True}
    assert final["id"] == request_id and final["error"]["code"] == "cancelled"
    assert 1 <= len(frames) < 12
    assert all(Path(f["path"]).is_file() for f in frames)
    assert client.request("cancel", target=request_id)["cancelled"] is False


def test_when_a_client_disconnects_mid_stream_then_its_request_is_dropped_and_others_served(
        worker, tmp_path):
    plate = make_plate(tmp_path / "plate", 12, seed=10)
    leaving = worker.client(name="leaving")
    leaving.submit({"node": NODE, "plate": plate, "frames": "1-12"})
    while leaving.recv().get("event") != "frame":
        pass
    leaving.close()
    with worker.client() as other:
        assert wait_for(lambda: other.request("status")["queue"] == [], timeout=15)
        events = other.process({"node": NODE, "plate": make_plate(tmp_path / "p2", 1, 11)})
        assert events[-1]["event"] == "done"


def test_when_asking_status_then_queue_engines_device_and_clients_are_reported(
        worker, client, tmp_path):
    plate = make_plate(tmp_path / "plate", 12, seed=12)
    with worker.client(name="busy") as busy:
        request_id = busy.submit({"node": NODE, "plate": plate, "frames": "1-12"})
        while busy.recv().get("event") != "frame":
            pass
        status = client.request("status")
        busy.request("cancel", target=request_id)
    assert status["ok"] is True and status["pid"] == worker.process.pid
    assert status["clients"] >= 2 and status["uptime"] > 0
    assert status["device"] in ("cpu", "cuda") and status["providers"]
    assert "rvm-guided" in status["models_loaded"]
    entry = next(q for q in status["queue"] if q["id"] == request_id)
    assert entry["client"] == "busy" and entry["node"] == NODE and entry["total"] == 12
    assert entry["state"] == "running" and entry["done"] >= 1


def test_when_not_hello_first_then_unauthorized_and_closed(worker):
    with Client(worker.port, hello=False) as raw:
        raw.send({"id": "1", "op": "ping"})
        reply = raw.recv()
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
        assert raw.closed_by_peer()


def test_when_the_token_is_wrong_then_unauthorized_and_closed(worker):
    with Client(worker.port, hello=False) as raw:
        raw.send({"op": "hello", "token": "0" * 64, "client": "intruder", "protocol": 1})
        reply = raw.recv()
        assert reply == {"op": "hello", "ok": False, "error": reply["error"]}
        assert reply["error"]["code"] == "unauthorized"
        assert raw.closed_by_peer()
    with worker.client() as fine:
        assert fine.request("ping")["ok"] is True


def test_when_the_worker_runs_then_worker_json_describes_it(worker):
    info = json.loads((worker.home / "worker.json").read_text())
    assert info["host"] == "127.0.0.1" and info["port"] == worker.port
    assert info["pid"] == worker.process.pid and info["protocol"] == 1
    assert info["version"] == "0.1.0" and info["started"] > 0
