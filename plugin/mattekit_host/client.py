"""``WorkerClient``: the host's side of the worker protocol (inference/PROTOCOL.md).

One TCP connection to 127.0.0.1 per call: connect to the port in ``<home>/worker.json``, say
hello with the token, send the request, read its replies, hang up. That keeps a client simple
and safe to share between threads (a Nuke UI thread and render threads, say).

The worker is started on demand with the configured interpreter (``$MATTEKIT_PYTHON``) as a
detached process that outlives this Nuke session and serves the others; a running one is
reattached to, a stale ``worker.json`` (nothing answers) counts as "not running". If a
request's connection drops (the worker crashed or was killed), the worker is started again and
the request sent once more -- safe, because the worker's per-frame cache makes a re-render of
finished frames a cache hit -- and a second failure raises ``WorkerUnavailable``.

Every wait has a timeout: connecting (5 s), starting the worker (``start_timeout``), silence
during a request (``request_timeout``); waits wake every 0.2 s to notice a cancel request.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from mattekit_host import paths
from mattekit_host.errors import MattekitHostError, WorkerError, WorkerUnavailable

PROTOCOL_VERSION = 1
LOOPBACK = "127.0.0.1"
WORKER_MODULE = "mattekit.inference.worker"
CONNECT_TIMEOUT = 5.0        # connecting and sending
HELLO_TIMEOUT = 10.0         # the worker answers hello on its connection thread, at once
QUICK_TIMEOUT = 60.0         # ping, models, status, shutdown
CANCEL_GRACE = 30.0          # after a cancel, how long the worker may take to end the stream
SHUTDOWN_WAIT = 40.0         # the worker lets running renders end before it exits
POLL_SECONDS = 0.2           # how often a blocking read looks at its cancel event
SPAWN_POLL_SECONDS = 0.05
MAX_LINE_BYTES = 64 << 20    # a reply line longer than this is garbage, not a protocol message
CANCELLED = "cancelled"
INTERNAL = "internal"
#: The host application's own Python settings (Nuke's, a studio's Python 3.9 packages) must not
#: leak into the worker's interpreter, which runs its own environment.
HOST_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE",
                         "__PYVENV_LAUNCHER__")
#: Set this to give the worker a PYTHONPATH of its own (a development checkout, say).
WORKER_PYTHONPATH_ENV = "MATTEKIT_WORKER_PYTHONPATH"

Message = Dict[str, Any]


class _NotRunning(Exception):
    """No worker answers at the address in worker.json (absent, stale, or starting)."""


class _ConnectionLost(Exception):
    """The connection to the worker broke in the middle of a call."""


class _Silent(Exception):
    """The worker sent nothing for as long as the caller was willing to wait."""


class _Channel:
    """One connection: JSON lines out, JSON lines in, every read bounded and interruptible."""

    def __init__(self, sock: socket.socket, port: int):
        self.sock = sock
        self.port = port
        self._buffer = bytearray()

    @classmethod
    def open(cls, port: int) -> _Channel:
        try:
            sock = socket.create_connection((LOOPBACK, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:  # refused, reset, timed out: nobody (usable) listens there
            raise _NotRunning(f"nothing answers on {LOOPBACK}:{port} "
                              f"({exc.strerror or exc})") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return cls(sock, port)

    def send(self, message: Message) -> None:
        data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
        try:
            self.sock.settimeout(CONNECT_TIMEOUT)
            self.sock.sendall(data + b"\n")
        except OSError as exc:
            raise _ConnectionLost(f"sending to the worker failed ({exc.strerror or exc})") \
                from exc

    def receive(self, timeout: float,
                wake: Optional[Callable[[], bool]] = None) -> Optional[Message]:
        """The next message; None as soon as ``wake()`` is true while waiting. Raises
        _Silent after ``timeout`` seconds without a full message, _ConnectionLost on EOF."""
        deadline = time.monotonic() + timeout
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if line.strip():
                    return self._decode(line)
                continue
            if len(self._buffer) > MAX_LINE_BYTES:
                raise WorkerUnavailable(f"the process on {LOOPBACK}:{self.port} sent a line "
                                        f"longer than {MAX_LINE_BYTES} bytes; it does not "
                                        "speak the mattekit protocol")
            if wake is not None and wake():
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Silent()
            try:
                self.sock.settimeout(min(POLL_SECONDS, remaining))
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as exc:
                raise _ConnectionLost(f"the connection broke ({exc.strerror or exc})") from exc
            if not chunk:
                raise _ConnectionLost("the worker closed the connection")
            self._buffer += chunk

    def _decode(self, line: bytes) -> Message:
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            message = None
        if not isinstance(message, dict):
            raise WorkerUnavailable(f"the process on {LOOPBACK}:{self.port} sent something "
                                    "that is not a mattekit protocol message")
        return message

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _default_client_name() -> str:
    """"nuke 15.1v1 pid 4242" inside Nuke, else the program's name and pid."""
    nuke = sys.modules.get("nuke")
    version = getattr(nuke, "NUKE_VERSION_STRING", None) if nuke is not None else None
    if version:
        program = f"nuke {version}"
    else:
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return f"{program} pid {os.getpid()}"


def _address(info: Optional[Message]) -> Optional[Tuple[Any, Any]]:
    """(pid, port) of a worker.json, to tell a new one from a stale one."""
    return None if info is None else (info.get("pid"), info.get("port"))


def _error_from(message: Message) -> WorkerError:
    """The WorkerError for an error reply or error event."""
    error = message.get("error")
    if not isinstance(error, dict):
        error = {}
    code = error.get("code")
    text = error.get("message")
    code = code if isinstance(code, str) and code else INTERNAL
    text = text if isinstance(text, str) else ""
    return WorkerError(code, text or f"the mattekit worker failed the request ({code})")


def _output_tail(path: Path, limit: int = 4096) -> str:
    """The last non-empty line of a worker's captured output, or ''."""
    try:
        with open(str(path), "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - limit))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def worker_environment(home: Path) -> Dict[str, str]:
    """The environment of a process of the worker's Python (the worker, `mattekit train`):
    this one without the host's Python settings, with the worker's own PYTHONPATH if set."""
    env = {k: v for k, v in os.environ.items() if k not in HOST_PYTHON_VARIABLES}
    own_path = os.environ.get(WORKER_PYTHONPATH_ENV)
    if own_path:
        env["PYTHONPATH"] = own_path
    env[paths.HOME_ENV] = str(home)
    return env


class WorkerClient:
    """Talks to the mattekit worker of one home folder, starting it when needed and allowed.

    ``home``: the worker's home (default ``$MATTEKIT_HOME`` or ``~/.mattekit``); ``python``: the
    interpreter that starts it (default ``$MATTEKIT_PYTHON``, looked up only when a start is
    needed); ``spawn``: whether this client may start a worker; ``start_timeout``: seconds a
    start may take; ``request_timeout``: seconds a request may go without any message from the
    worker; ``client_name``: how this client appears in the worker's status and log.
    """

    def __init__(self, home: Optional[Path] = None, python: Optional[str] = None,
                 spawn: bool = True, start_timeout: float = 60.0,
                 request_timeout: float = 3600.0, client_name: Optional[str] = None):
        self.home = paths.ensure_home(Path(home)) if home is not None else paths.mattekit_home()
        self.python = python
        self.spawn = spawn
        self.start_timeout = float(start_timeout)
        self.request_timeout = float(request_timeout)
        self.client_name = client_name or _default_client_name()
        self._spawn_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"WorkerClient(home={str(self.home)!r}, spawn={self.spawn})"

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- public calls -------------------------------------------------------------------------

    def hello(self) -> Message:
        """Connect (starting the worker if needed and allowed); the worker's hello reply:
        ``version``, ``protocol``, ``pid``, ``cache_root``."""
        channel, reply = self._session()
        channel.close()
        return reply

    def ping(self) -> Message:
        return self._call("ping")

    def models(self) -> Message:
        """Engines with their node, model id, licence, sha256 and whether installed."""
        return self._call("models")

    def status(self) -> Message:
        """The worker's pid, device, clients, loaded engines and queue."""
        return self._call("status")

    def process(self, job: Message, on_event: Optional[Callable[[Message], None]] = None,
                cancel: Optional[threading.Event] = None) -> Message:
        """Render ``job`` (RenderJob fields; ``node`` and ``plate`` required) and return the
        final ``done`` event.

        ``on_event`` is called, on this thread, with every ``queued``, ``started`` and
        ``frame`` event. An error event raises ``WorkerError(code, message)``. Setting
        ``cancel`` sends a cancel for the request and raises ``WorkerError("cancelled", ...)``
        once the worker has stopped (if the worker finished first, ``done`` is returned).
        If the worker dies mid-request it is started again and the job sent once more: the
        stream then starts over with ``queued``, and finished frames return as cache hits.
        """
        if not isinstance(job, dict):
            raise TypeError(f"job must be a dict of RenderJob fields, not {type(job).__name__}")
        if cancel is not None and cancel.is_set():
            raise WorkerError(CANCELLED, "cancelled before it was sent to the mattekit worker")
        lost: Optional[str] = None
        for attempt in (1, 2):
            try:
                channel, hello = self._session()
            except WorkerUnavailable as exc:
                if lost is None:
                    raise
                raise WorkerUnavailable(f"{lost}, and it could not be started again: {exc}") \
                    from exc
            try:
                return self._stream(channel, hello, job, on_event, cancel)
            except _ConnectionLost as exc:
                if cancel is not None and cancel.is_set():
                    raise WorkerError(CANCELLED, "cancelled (the connection to the mattekit "
                                                 "worker closed)") from exc
                if attempt == 2:
                    raise WorkerUnavailable(
                        f"{lost}; it was restarted and the new worker (pid {hello.get('pid')}) "
                        f"stopped too ({exc}); giving up: see {self.home / paths.LOG_FILE} and "
                        f"{self.home / paths.OUTPUT_FILE}"
                    ) from exc
                lost = (f"the mattekit worker (pid {hello.get('pid')}) stopped during the "
                        f"request ({exc})")
            finally:
                channel.close()
        raise MattekitHostError("unreachable")  # pragma: no cover - the loop returns or raises

    def shutdown(self) -> None:
        """Ask the running worker (if any) to stop, and wait until it has; never starts one."""
        self._check_open()
        try:
            channel, hello = self._open_session()
        except _NotRunning:
            return
        reply: Optional[Message] = None
        try:
            channel.send({"id": "shutdown", "op": "shutdown"})
            reply = self._reply(channel, "shutdown", QUICK_TIMEOUT, hello)
        except _ConnectionLost:
            reply = None  # already going
        finally:
            channel.close()
        if reply is not None and reply.get("ok") is not True:
            raise _error_from(reply)
        self._wait_gone(hello.get("pid"))

    def close(self) -> None:
        """Forget this client's resources. The worker keeps running for other sessions; use
        ``shutdown()`` to stop it."""
        self._closed = True

    # -- requests -----------------------------------------------------------------------------

    def _call(self, op: str) -> Message:
        """A single-reply request, resent once after a restart if the connection drops."""
        lost: Optional[str] = None
        for _attempt in (1, 2):
            channel, hello = self._session()
            try:
                channel.send({"id": op, "op": op})
                reply = self._reply(channel, op, min(self.request_timeout, QUICK_TIMEOUT), hello)
            except _ConnectionLost as exc:
                if lost is not None:
                    raise WorkerUnavailable(f"the mattekit worker connection broke twice during "
                                            f"'{op}' ({lost}; then {exc}); see "
                                            f"{self.home / paths.LOG_FILE}") from exc
                lost = str(exc)
                continue
            finally:
                channel.close()
            if reply.get("ok") is not True:
                raise _error_from(reply)
            return reply
        raise MattekitHostError("unreachable")  # pragma: no cover

    def _reply(self, channel: _Channel, request_id: str, timeout: float,
               hello: Message) -> Message:
        while True:
            try:
                message = channel.receive(timeout)
            except _Silent:
                raise WorkerUnavailable(self._silent_message(hello, timeout)) from None
            if message is None:  # pragma: no cover - no wake function given
                continue
            if message.get("id") == request_id:
                return message
            if message.get("id") is None and message.get("ok") is False:
                raise _error_from(message)  # e.g. message_too_large: about the connection

    def _stream(self, channel: _Channel, hello: Message, job: Message,
                on_event: Optional[Callable[[Message], None]],
                cancel: Optional[threading.Event]) -> Message:
        request_id = "process"
        channel.send({"id": request_id, "op": "process", "job": job})
        wake = cancel.is_set if cancel is not None else None
        cancelling = False
        while True:
            timeout = CANCEL_GRACE if cancelling else self.request_timeout
            try:
                message = channel.receive(timeout, None if cancelling else wake)
            except _Silent:
                if cancelling:
                    raise WorkerError(CANCELLED, f"cancelled; the mattekit worker did not "
                                                 f"confirm within {CANCEL_GRACE:g} s, so the "
                                                 "connection was closed (which also cancels "
                                                 "it)") from None
                raise WorkerUnavailable(self._silent_message(hello, timeout)) from None
            if message is None:  # cancel was set while waiting
                channel.send({"id": "cancel", "op": "cancel", "target": request_id})
                cancelling = True
                continue
            if message.get("id") != request_id:
                if message.get("id") is None and message.get("ok") is False:
                    raise _error_from(message)
                continue  # the cancel reply
            event = message.get("event")
            if event == "done" and message.get("ok", True) is not False:
                return message
            if event == "error" or message.get("ok") is False:
                raise _error_from(message)
            if on_event is not None:
                on_event(message)

    def _silent_message(self, hello: Message, seconds: float) -> str:
        return (f"the mattekit worker (pid {hello.get('pid')}) sent nothing for {seconds:g} s; "
                f"it may be stuck: see {self.home / paths.LOG_FILE}, or stop it with "
                "`mattekit worker stop` and try again")

    # -- connecting and starting --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MattekitHostError("this mattekit WorkerClient is closed; make a new one")

    def _open_session(self) -> Tuple[_Channel, Message]:
        """Connect to the worker named by worker.json and say hello; _NotRunning when none
        answers there."""
        info = paths.read_worker_info(self.home)
        if info is None:
            raise _NotRunning(f"no worker is running ({self.home / paths.WORKER_FILE} is absent)")
        port = int(info["port"])
        token = paths.read_or_create_token(self.home)
        channel = _Channel.open(port)
        try:
            channel.send({"op": "hello", "token": token, "client": self.client_name,
                          "protocol": PROTOCOL_VERSION})
            reply = channel.receive(HELLO_TIMEOUT)
        except (_ConnectionLost, _Silent) as exc:
            channel.close()
            # A worker that just died, or another program that took over its port.
            raise _NotRunning(f"nothing answers hello on {LOOPBACK}:{port} "
                              f"({exc or 'no reply'})") from exc
        except BaseException:
            channel.close()
            raise
        if reply is None or reply.get("ok") is not True:
            channel.close()
            error = _error_from(reply or {})
            hint = ""
            if error.code == "unauthorized":
                hint = (f" (the token in {self.home / paths.TOKEN_FILE} is not the one the "
                        "worker started with; stop the worker and start again)")
            raise WorkerUnavailable(f"the mattekit worker on {LOOPBACK}:{port} refused this "
                                    f"client: {error.message}{hint}")
        if reply.get("protocol") != PROTOCOL_VERSION:
            channel.close()
            raise WorkerUnavailable(f"the mattekit worker on {LOOPBACK}:{port} speaks protocol "
                                    f"{reply.get('protocol')!r}, this plugin "
                                    f"{PROTOCOL_VERSION}; install matching versions")
        return channel, reply

    def _session(self) -> Tuple[_Channel, Message]:
        """An authenticated connection, starting the worker when none runs (if allowed)."""
        self._check_open()
        try:
            return self._open_session()
        except _NotRunning as exc:
            if not self.spawn:
                raise WorkerUnavailable(
                    f"no mattekit worker is running for {self.home} ({exc}) and this client "
                    "may not start one; start it with `mattekit worker start`"
                ) from exc
        return self._start_worker()

    def _start_worker(self) -> Tuple[_Channel, Message]:
        with self._spawn_lock:
            self._check_open()
            try:  # another thread may have started it while we waited for the lock
                return self._open_session()
            except _NotRunning:
                pass
            python = self.python or paths.worker_python()
            stale = _address(paths.read_worker_info(self.home))
            process = self._spawn(python)
            try:
                return self._await_start(process, python, stale)
            finally:
                # The worker outlives this call (and this client): a daemon thread collects
                # its exit status whenever it ends, so it never lingers as a zombie.
                threading.Thread(target=process.wait, daemon=True,
                                 name=f"mattekit-worker-{process.pid}-wait").start()

    def _await_start(self, process: subprocess.Popen[bytes], python: str,
                     stale: Optional[Tuple[Any, Any]]) -> Tuple[_Channel, Message]:
        """Wait for the worker we started (or one that beat it to the home's lock) to answer.

        ``stale`` is the (pid, port) of a worker.json nothing answered at: it is not tried again
        (on Windows a refused loopback connection takes seconds) until the file changes."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            address = _address(paths.read_worker_info(self.home))
            if address is not None and address != stale:
                try:
                    return self._open_session()
                except _NotRunning:
                    pass
            code = process.poll()
            if code == 0:
                # Status 0 before listening: another worker holds the home's lock (a racing
                # start) or answered it; wait for that one, whatever worker.json says.
                stale = None
            if code is not None and code != 0:
                tail = _output_tail(self.home / paths.OUTPUT_FILE)
                raise WorkerUnavailable(
                    f"the mattekit worker exited with status {code} before listening "
                    f"(python: {python})" + (f": {tail}" if tail else "")
                    + f"; see {self.home / paths.OUTPUT_FILE} and {self.home / paths.LOG_FILE}"
                )
            if time.monotonic() > deadline:
                raise WorkerUnavailable(
                    f"mattekit worker did not start within {self.start_timeout:g} s "
                    f"(python: {python}); see {self.home / paths.LOG_FILE} and "
                    f"{self.home / paths.OUTPUT_FILE}"
                )
            time.sleep(SPAWN_POLL_SECONDS)

    def _worker_env(self) -> Dict[str, str]:
        return worker_environment(self.home)

    def _spawn(self, python: str) -> subprocess.Popen[bytes]:
        """Start ``python -m mattekit.inference.worker start --foreground`` detached from this
        process (its own session / process group), output appended to worker.out."""
        command = [python, "-m", WORKER_MODULE, "start", "--foreground"]
        options: Dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = (getattr(subprocess, "DETACHED_PROCESS", 0x8)
                                        | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200))
        else:
            options["start_new_session"] = True
        output_path = self.home / paths.OUTPUT_FILE
        try:
            output: Any = open(str(output_path), "ab")
        except OSError:
            output = None
        try:
            if output is not None:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                output.write(f"--- {stamp} {self.client_name} starts: "
                             f"{' '.join(command)}\n".encode("utf-8", "replace"))
                output.flush()
            sink = output if output is not None else subprocess.DEVNULL
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                    env=self._worker_env(), cwd=str(self.home), close_fds=True,
                                    **options)
        except OSError as exc:
            raise WorkerUnavailable(
                f"cannot start the mattekit worker with python {python!r} "
                f"({exc.strerror or exc}); set {paths.PYTHON_ENV} to the python of the mattekit "
                "environment (`python3 install.py --nuke` does it)"
            ) from exc
        finally:
            if output is not None:
                output.close()

    def _wait_gone(self, pid: Any) -> None:
        """Until worker.json no longer names ``pid`` (the worker removes it as it stops)."""
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while time.monotonic() < deadline:
            info = paths.read_worker_info(self.home)
            if info is None or info.get("pid") != pid:
                return
            time.sleep(SPAWN_POLL_SECONDS)


__all__: List[str] = ["WorkerClient", "WorkerError", "WorkerUnavailable", "MattekitHostError"]
