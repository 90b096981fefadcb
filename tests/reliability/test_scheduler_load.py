"""Under load from several clients: a request whose frames are all reported never waits for
another round before its `done` (found by benchmarks/bench_load.py: every single-frame request
paused after its frame, doubling latency and loading one engine per waiting client)."""
from __future__ import annotations

import threading

from mattekit.inference.render import RenderJob
from mattekit.inference.worker.scheduler import PAUSED, RUNNING, Request, Scheduler


def request(owner: str, name: str) -> Request:
    return Request(id=name, owner=owner, job=RenderJob(node="video-matte", plate="/p.exr"))


def test_when_the_last_frame_is_reported_then_the_request_keeps_the_turn_to_finish():
    started: list[str] = []
    scheduler = Scheduler(lambda r: started.append(r.id))
    first, second = request("A", "a1"), request("B", "b1")
    scheduler.submit(first)
    scheduler.submit(second)  # B waits for the turn
    first.total, first.done = 1, 1
    returned = threading.Event()
    thread = threading.Thread(target=lambda: (scheduler.checkpoint(first), returned.set()),
                              daemon=True)
    thread.start()
    assert returned.wait(10), "a finished request was paused behind another client"
    assert first.state == RUNNING and started == ["a1"]
    scheduler.finish(first)
    assert started == ["a1", "b1"]  # and then the turn moves on


def test_when_frames_remain_then_the_turn_passes_to_the_waiting_client():
    started: list[str] = []
    scheduler = Scheduler(lambda r: started.append(r.id))
    first, second = request("A", "a1"), request("B", "b1")
    scheduler.submit(first)
    scheduler.submit(second)
    first.total, first.done = 3, 1
    thread = threading.Thread(target=scheduler.checkpoint, args=(first,), daemon=True)
    thread.start()
    for _ in range(500):
        if started == ["a1", "b1"]:
            break
        thread.join(0.01)
    assert started == ["a1", "b1"] and first.state == PAUSED
    scheduler.finish(second)
    thread.join(10)
    assert not thread.is_alive() and first.state == RUNNING
