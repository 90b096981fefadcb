"""Fair turns between connections, and the pool of warm engines.

One render computes at a time (the CPU or GPU is the bottleneck). Each connection's requests run
in the order it sent them; between connections the turn passes round-robin, at frame
granularity: after every frame the running render hands the turn to the next connection that
has work and waits for it to come back. So one client's long range cannot starve another's
single frame. A render that has given up its turn stays paused in the middle of its range with
its engine and recurrent state intact (at most one such render per connection: only the head
request of a connection is ever started).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Optional

from mattekit.inference.engines.registry import create_engine
from mattekit.inference.render import RenderJob
from mattekit.inference.worker.protocol import params_key

QUEUED, RUNNING, PAUSED, FINISHED = "queued", "running", "paused", "finished"


@dataclass(eq=False)
class Request:
    """One process request: its job, who sent it, its cancel flag and its progress."""

    id: str
    owner: Hashable  # the connection that sent it
    job: RenderJob
    client: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = QUEUED
    done: int = 0
    total: Optional[int] = None
    thread: Optional[threading.Thread] = None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "client": self.client, "node": self.job.node,
                "state": self.state, "done": self.done, "total": self.total}


class Scheduler:
    """Round-robin turns across connections; `start(request)` begins a request's render thread.

    The render thread calls `checkpoint()` after each frame (where the turn may pass on) and
    `finish()` at its end, whatever happened.
    """

    def __init__(self, start: Callable[[Request], None]):
        self._start = start
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Request]] = {}
        self._ring: deque[Hashable] = deque()  # connections with work; ring[0] has the turn
        self._holder: Optional[Request] = None

    def _dispatch(self) -> None:
        """Give the turn to the head request of ring[0] when nobody holds it (lock held)."""
        if self._holder is not None or not self._ring:
            return
        request = self._queues[self._ring[0]][0]
        self._holder = request
        if request.state == QUEUED:
            request.state = RUNNING
            self._start(request)
        else:
            request.state = RUNNING
            self._cond.notify_all()

    def submit(self, request: Request,
               announce: Optional[Callable[[int], None]] = None) -> int:
        """Queue a request; returns its position: how many requests get a turn before it.

        `announce(position)` runs before the request can start (so a 'queued' event is sent
        before its 'started')."""
        with self._cond:
            queue = self._queues.setdefault(request.owner, deque())
            others = sum(1 for owner in self._ring if owner is not request.owner)
            position = len(queue) + others
            queue.append(request)
            if request.owner not in self._ring:
                self._ring.append(request.owner)
            if announce is not None:
                announce(position)
            self._dispatch()
            return position

    def checkpoint(self, request: Request) -> None:
        """Between two frames: pass the turn on if another connection waits, and wait for it
        to come back (or for this request to be cancelled). After its last frame a request
        keeps the turn to finish: pausing it there would only delay its `done` by a round of
        the others' frames and hold its engine, so every waiting client would load its own."""
        with self._cond:
            last = request.total is not None and request.done >= request.total
            if self._holder is not request or len(self._ring) < 2 or last:
                return
            self._ring.rotate(-1)  # request.owner was ring[0]: to the back of the ring
            self._holder = None
            request.state = PAUSED
            self._dispatch()
            while self._holder is not request and not request.cancel.is_set():
                self._cond.wait()

    def finish(self, request: Request) -> None:
        """A started request ended (done, failed or cancelled): the turn moves on."""
        with self._cond:
            request.state = FINISHED
            self._remove(request)
            if self._holder is request:
                self._holder = None
                if self._ring and self._ring[0] is request.owner:
                    self._ring.rotate(-1)
            self._dispatch()

    def _remove(self, request: Request) -> None:
        queue = self._queues.get(request.owner)
        if queue is None or request not in queue:
            return
        queue.remove(request)
        if not queue:
            del self._queues[request.owner]
            self._ring.remove(request.owner)

    def cancel(self, request: Request) -> Optional[str]:
        """Cancel a request: 'queued' (removed, it never started: the caller reports it),
        'active' (its render stops at the next frame), None (already finished)."""
        with self._cond:
            if request.state == FINISHED:
                return None
            request.cancel.set()
            if request.state == QUEUED:
                request.state = FINISHED
                self._remove(request)
                self._dispatch()
                return QUEUED
            self._cond.notify_all()  # a paused render wakes up to stop
            return "active"

    def cancel_owner(self, owner: Hashable) -> list[Request]:
        """Cancel every request of a connection; returns those removed before they started."""
        with self._cond:
            requests = list(self._queues.get(owner, ()))
        return [r for r in requests if self.cancel(r) == QUEUED]

    def cancel_all(self) -> list[Request]:
        """Cancel everything (shutdown); returns the requests removed before they started."""
        with self._cond:
            owners = list(self._queues)
        removed: list[Request] = []
        for owner in owners:
            removed.extend(self.cancel_owner(owner))
        return removed

    def snapshot(self) -> list[Request]:
        """Every request not finished, the one holding the turn first, then in ring order."""
        with self._cond:
            return [r for owner in self._ring for r in self._queues[owner]]

    def threads(self) -> list[threading.Thread]:
        with self._cond:
            return [r.thread for owner in self._ring for r in self._queues[owner]
                    if r.thread is not None]


EngineKey = tuple[str, str, str]


class EnginePool:
    """Engines kept loaded between requests, keyed by (engine, device, params JSON).

    A paused render keeps its engine checked out, so the pool makes another instance when a
    second request needs the same engine meanwhile. Instances unused for `idle_timeout`
    seconds are dropped (`idle_timeout` <= 0: kept until the worker exits).
    """

    def __init__(self, idle_timeout: float,
                 factory: Callable[[str, str, Mapping[str, Any]], Any] = create_engine):
        self.idle_timeout = idle_timeout
        self._factory = factory
        self._lock = threading.Lock()
        self._idle: dict[EngineKey, list[tuple[Any, float]]] = {}
        self._busy: dict[EngineKey, int] = {}

    def checkout(self, name: str, device: str, params: Mapping[str, Any],
                 stamp: str = "") -> tuple[EngineKey, Any]:
        """A warm engine (reset to a fresh shot) or a new one. ``stamp`` tells versions of
        one name apart (a shot model's checksum: a retrained one is a new engine)."""
        key = (name, device, params_key(params) + (f"@{stamp}" if stamp else ""))
        with self._lock:
            idle = self._idle.get(key)
            engine = idle.pop()[0] if idle else None
            self._busy[key] = self._busy.get(key, 0) + 1
        if engine is None:
            try:
                engine = self._factory(name, device, params)
            except BaseException:
                self._release(key)
                raise
        engine.reset()
        return key, engine

    def _release(self, key: EngineKey) -> None:
        with self._lock:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]

    def checkin(self, key: EngineKey, engine: Any) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append((engine, time.monotonic()))
        self._release(key)

    def unload_idle(self, now: Optional[float] = None) -> int:
        """Drop instances idle for longer than the timeout; returns how many were dropped."""
        if self.idle_timeout <= 0:
            return 0
        now = time.monotonic() if now is None else now
        dropped = 0
        with self._lock:
            for key in list(self._idle):
                kept = [(e, t) for e, t in self._idle[key] if now - t < self.idle_timeout]
                dropped += len(self._idle[key]) - len(kept)
                if kept:
                    self._idle[key] = kept
                else:
                    del self._idle[key]
        return dropped

    def loaded(self) -> list[str]:
        """Names of the engines loaded (idle or in use), sorted, each once."""
        with self._lock:
            return sorted({key[0] for key in list(self._idle) + list(self._busy)})

    def providers(self) -> list[str]:
        """Execution providers of the loaded engines that report them (onnxruntime ones)."""
        with self._lock:
            engines = [e for entries in self._idle.values() for e, _ in entries]
        found: list[str] = []
        for engine in engines:
            for provider in getattr(engine, "providers", []):
                if provider not in found:
                    found.append(provider)
        return found

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
