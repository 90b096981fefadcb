"""A minimal blocking client of the worker protocol, for `mattekit worker stop|status` and the
benchmarks (the Nuke host has its own standard-library client in ``plugin/``)."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator, Optional

from mattekit.inference.errors import MattekitError
from mattekit.inference.worker import PROTOCOL_VERSION
from mattekit.inference.worker.protocol import MAX_LINE_BYTES, encode
from mattekit.inference.worker.security import read_or_create_token


class WorkerUnavailable(MattekitError):
    """No worker answers (not running, or a stale worker.json)."""


class WorkerReplyError(MattekitError):
    """The worker answered a request with an error."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class WorkerClient:
    """One authenticated connection; `call` for one-reply ops, `stream` for process."""

    def __init__(self, host: str, port: int, token: str, client: str = "mattekit cli",
                 timeout: Optional[float] = 10.0):
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise WorkerUnavailable(f"no worker answers at {host}:{port} ({exc})") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")
        self._next = 0
        self.hello = self._exchange({"op": "hello", "token": token, "client": client,
                                     "protocol": PROTOCOL_VERSION})
        if not self.hello.get("ok"):
            error = self.hello.get("error") or {}
            self.close()
            raise WorkerReplyError(error.get("code", "?"), error.get("message", ""))

    @classmethod
    def for_home(cls, home: Path, info: dict[str, Any], **kwargs: Any) -> WorkerClient:
        return cls(str(info["host"]), int(info["port"]), read_or_create_token(home), **kwargs)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.sock.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(encode(message))
        except OSError as exc:
            raise WorkerUnavailable(f"the worker connection broke ({exc})") from exc

    def receive(self) -> dict[str, Any]:
        try:
            line = self.stream.readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise WorkerUnavailable(f"the worker connection broke ({exc})") from exc
        if not line:
            raise WorkerUnavailable("the worker closed the connection")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise WorkerUnavailable("the worker sent something that is not a JSON object")
        return message

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def new_id(self) -> str:
        self._next += 1
        return str(self._next)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a one-reply op and return its reply; WorkerReplyError when it failed."""
        request_id = self.new_id()
        self.send({"id": request_id, "op": op, **fields})
        while True:
            reply = self.receive()
            if reply.get("id") == request_id:
                break
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise WorkerReplyError(error.get("code", "?"), error.get("message", ""))
        return reply

    def stream_process(self, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Send a process request and yield its events up to and including done or error."""
        request_id = self.new_id()
        self.send({"id": request_id, "op": "process", "job": job})
        while True:
            event = self.receive()
            if event.get("id") != request_id:
                continue
            yield event
            if event.get("event") in ("done", "error") or event.get("ok") is False:
                return
