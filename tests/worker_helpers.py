"""Test-side helpers for the worker tests: start the real worker as a subprocess and talk to it
over a real socket with a tiny client written here (not the worker's own nor the plugin's)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from mattekit.inference.exrio import write_exr

START_TIMEOUT = 30.0


def make_plate(folder: Path, count: int, seed: int, width: int = 96, height: int = 64,
               first: int = 1) -> str:
    """A smooth random-ish scene-linear EXR sequence, unique per seed; returns its pattern."""
    rng = np.random.default_rng(seed)
    base = rng.random((4, 6, 3)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        smooth = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
        cx, cy = width * (0.4 + 0.02 * i), height * 0.5
        blob = np.exp(-(((xx - cx) / (width * 0.15)) ** 2 + ((yy - cy) / (height * 0.3)) ** 2))
        rgb = np.clip(0.6 * smooth + 0.5 * blob[..., None], 0.0, 1.0) ** 2.2
        write_exr(folder / f"plate.{first + i:04d}.exr", rgb.astype(np.float32),
                  pixel_type="half")
    return str(folder / "plate.####.exr")


class Client:
    """One connection to the worker: raw lines in and out, JSON helpers, a reply timeout."""

    def __init__(self, port: int, token: Optional[str] = None, hello: bool = True,
                 timeout: float = 30.0, name: str = "pytest"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        self.hello_reply: dict[str, Any] = {}
        self._next = 0
        if hello:
            self.send({"op": "hello", "token": token, "client": name, "protocol": 1})
            self.hello_reply = self.recv()
            assert self.hello_reply.get("ok") is True, self.hello_reply

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise EOFError("the worker closed the connection")
        return json.loads(line)

    def closed_by_peer(self) -> bool:
        """True when the worker has hung up (EOF or reset)."""
        try:
            return self.reader.readline() == b""
        except ConnectionResetError:
            return True

    def next_id(self) -> str:
        self._next += 1
        return f"r{self._next}"

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id = self.next_id()
        self.send({"id": request_id, "op": op, **fields})
        while True:
            reply = self.recv()
            if reply.get("id") == request_id:
                return reply

    def submit(self, job: dict[str, Any], request_id: Optional[str] = None) -> str:
        request_id = request_id or self.next_id()
        self.send({"id": request_id, "op": "process", "job": job})
        return request_id

    def events(self, request_id: str) -> list[dict[str, Any]]:
        """Every message about `request_id` up to and including done/error."""
        events = []
        while True:
            message = self.recv()
            if message.get("id") != request_id:
                continue
            events.append(message)
            if message.get("event") in ("done", "error"):
                return events

    def process(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        return self.events(self.submit(job))

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Worker:
    """A worker subprocess started in the foreground, with its home and cache."""

    process: subprocess.Popen
    home: Path
    cache: Path
    port: int
    token: str

    def client(self, **kwargs: Any) -> Client:
        return Client(self.port, self.token, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                with self.client(timeout=5) as client:
                    client.request("shutdown")
                self.process.wait(timeout=30)
            except (OSError, EOFError, subprocess.TimeoutExpired, AssertionError):
                self.process.kill()
                self.process.wait(timeout=10)


def worker_env(home: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ, MATTEKIT_HOME=str(home), MATTEKIT_CACHE=str(cache))
    env.pop("MATTEKIT_WORK_ROOTS", None)
    return env


def start_worker(home: Path, cache: Path, args: Sequence[str] = (),
                 env: Optional[dict[str, str]] = None,
                 launcher: Sequence[str] = ("-m", "mattekit.inference.worker")) -> Worker:
    """`python -m mattekit.inference.worker start --foreground` and wait for worker.json
    (`launcher`: what runs instead of `-m mattekit.inference.worker`, e.g. a fault wrapper)."""
    command = [sys.executable, *launcher, "start", "--foreground", *args]
    process = subprocess.Popen(command, env=env or worker_env(home, cache),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    info_path = home / "worker.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"worker exited with {process.returncode}: {output}")
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info["pid"] == process.pid:
                token = (home / "token").read_text().strip()
                return Worker(process, home, cache, int(info["port"]), token)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("worker did not write worker.json in time")


def start_worker_in(root: Path) -> Worker:
    """A worker with its home, cache and one allowed output root (``root/work``, made here)
    inside ``root``; ``worker.root`` and ``worker.work`` name them for the tests."""
    work = root / "work"
    work.mkdir()
    worker = start_worker(root / "home", root / "cache", ["--allow-root", str(work)],
                          env=worker_env(root / "home", root / "cache"))
    worker.root, worker.work = root, work  # type: ignore[attr-defined]
    return worker


def wait_for(predicate: Any, timeout: float = 10.0, period: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())
