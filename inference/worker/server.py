"""The worker's server: a loopback TCP socket, one reader and one writer thread per connection,
one render thread per started request (turns given by the scheduler), and ``worker.json``.

Messages are JSON lines (never pickle, never eval). A connection's writer thread owns the
sending, so a client that stops reading never blocks a render; one that falls too far behind is
disconnected. Everything a request can get wrong ends that request with an error reply; a bug
ends it with ``internal`` and a traceback in ``<home>/worker.log``, and the worker goes on.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import socket
import tempfile
import threading
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from mattekit.inference import __version__
from mattekit.inference.engines.registry import (
    MANIFEST_PATH,
    Manifest,
    create_engine,
    default_engine,
    engine_spec,
    load_manifest,
    model_path,
)
from mattekit.inference.errors import MattekitError, RenderCancelled
from mattekit.inference.render import FrameResult, frame_count, render
from mattekit.inference.sequence import parse_pattern
from mattekit.inference.worker import PROTOCOL_VERSION
from mattekit.inference.worker.protocol import (
    BAD_REQUEST,
    CANCELLED,
    FORBIDDEN_PATH,
    INTERNAL,
    MAX_LINE_BYTES,
    MESSAGE_TOO_LARGE,
    UNAUTHORIZED,
    ProtocolError,
    code_for,
    decode,
    encode,
    error_body,
    job_from_message,
)
from mattekit.inference.worker.scheduler import EnginePool, Request, Scheduler
from mattekit.inference.worker.security import (
    inside_roots,
    is_loopback,
    read_or_create_token,
    resolved_roots,
    token_matches,
)

HOST = "127.0.0.1"
WORKER_FILE = "worker.json"
LOG_FILE = "worker.log"
LOG_BYTES = 512 * 1024
LOG_BACKUPS = 2
MAX_OUTBOX = 10_000  # messages queued for a client that does not read: beyond, it is dropped
ACCEPT_POLL_SECONDS = 0.5
SHUTDOWN_JOIN_SECONDS = 30.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * MAX_LINE_BYTES
HELLO_SECONDS = 10.0  # a connection without a hello by then is closed (each one holds a thread)

log = logging.getLogger("mattekit.worker")


@dataclass
class WorkerConfig:
    """How a worker runs: ``mattekit worker start`` options."""

    home: Path
    cache_root: Path
    port: int = 0
    idle_timeout: float = 600.0
    allow_roots: list[Path] = field(default_factory=list)
    device: str = "auto"


def setup_logging(home: Path) -> logging.Handler:
    """A small rotating ``worker.log`` in the home folder for the worker's logger."""
    handler = logging.handlers.RotatingFileHandler(home / LOG_FILE, maxBytes=LOG_BYTES,
                                                   backupCount=LOG_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s "
                                           "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # warnings (a corrupt cache entry dropped, an input repaired) go to the log, not a lost stderr
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    return handler


def write_worker_file(home: Path, info: dict[str, Any]) -> Path:
    """Write ``worker.json`` atomically (temp file in the same folder, then rename)."""
    path = home / WORKER_FILE
    fd, temp = tempfile.mkstemp(prefix=".worker-", suffix=".json", dir=home)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(info, stream)
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    return path


def read_worker_file(home: Path) -> Optional[dict[str, Any]]:
    """The contents of ``worker.json``, or None when absent or unreadable."""
    try:
        info = json.loads((home / WORKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _providers_for(device: str) -> tuple[str, list[str]]:
    """The device a request with device 'auto' gets, and onnxruntime's providers for it."""
    try:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    except ImportError:
        return ("cpu" if device == "auto" else device), []
    cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not cuda):
        return "cpu", ["CPUExecutionProvider"]
    return "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]


def shot_model_entries(cache_root: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The ``models`` reply's entries for the shot models in the cache root: ``installed``
    false (and ``error``) where one cannot run."""
    from mattekit.inference.engines.shot import list_shot_models

    entries: list[dict[str, Any]] = []
    for name, found in list_shot_models(cache_root, manifest):
        entry: dict[str, Any] = {"name": name, "model": None, "licence": None}
        if isinstance(found, MattekitError):
            entry.update(node=None, sha256=None, installed=False, error=str(found))
        else:
            assert found.shot is not None
            entry.update(node=found.node, sha256=found.shot.sha256, installed=True,
                         kind=found.shot.kind, base_engine=found.shot.base_engine)
        entries.append(entry)
    return entries


class Connection:
    """One client connection: authenticated or not, its requests in flight, its send queue."""

    def __init__(self, server: WorkerServer, sock: socket.socket, peer: str):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.client = ""
        self.authenticated = False
        self.requests: dict[str, Request] = {}
        self._lock = threading.Lock()
        self._outbox: queue.Queue[Optional[bytes]] = queue.Queue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"mattekit-send-{peer}")

    def start(self) -> None:
        deadline = threading.Timer(HELLO_SECONDS, self._hello_overdue)
        deadline.daemon = True
        deadline.start()
        self._writer.start()
        threading.Thread(target=self._read_loop, daemon=True,
                         name=f"mattekit-conn-{self.peer}").start()

    # -- sending ------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message; dropped silently once the connection is closing."""
        data = encode(message)
        with self._lock:
            if self._closed:
                return
            if self._outbox.qsize() >= MAX_OUTBOX:
                log.warning("client %s does not read its replies: disconnected", self.label)
                self._closed = True
                self._outbox.put(None)
                with suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RD)
                return
            self._outbox.put(data)

    def _write_loop(self) -> None:
        while True:
            data = self._outbox.get()
            if data is None:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                with self._lock:
                    self._closed = True
                with suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader: the client is gone
                return

    def _stop_sending(self) -> None:
        """No more messages: flush those queued and end the writer thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._outbox.put(None)
        if threading.current_thread() is not self._writer:
            self._writer.join(timeout=5.0)

    def stop(self) -> None:
        """End the connection from the server side (shutdown): flush, then hang up."""
        self._stop_sending()
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _hello_overdue(self) -> None:
        """No hello in time (a stalled or trickling client): refuse it and hang up."""
        if self.authenticated:
            return
        log.warning("refused %s: no hello within %g s", self.peer, HELLO_SECONDS)
        self.send({"op": "hello", "ok": False, "error": error_body(
            UNAUTHORIZED, f"no hello within {HELLO_SECONDS:g} s; the connection is closed")})
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)  # the reader sees the end and closes

    @property
    def label(self) -> str:
        return f"{self.client or '?'} ({self.peer})"

    # -- receiving ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        hang_up = False
        try:
            stream = self.sock.makefile("rb")
            while True:
                try:
                    line = stream.readline(MAX_LINE_BYTES + 1)
                except OSError:
                    break
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES or (not line.endswith(b"\n")
                                                  and len(line) == MAX_LINE_BYTES + 1):
                    self.send({"id": None, "ok": False, "error": error_body(
                        MESSAGE_TOO_LARGE, f"message longer than {MAX_LINE_BYTES} bytes; "
                                           "the connection is closed")})
                    hang_up = True
                    break
                if not line.strip():
                    continue
                if not self.handle_line(line):
                    hang_up = True
                    break
        except Exception:  # a bug in the worker: log it, drop this connection, keep serving
            log.exception("connection %s failed", self.label)
            hang_up = True
        finally:
            self.server.connection_closed(self)
            self._stop_sending()
            if hang_up:
                self._linger()
            with suppress(OSError):
                self.sock.close()

    def _linger(self) -> None:
        """Say goodbye without a reset: half-close, then drain what the client still sends,
        so the error reply is not destroyed by an RST."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(LINGER_SECONDS)
            drained = 0
            while drained < LINGER_BYTES:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)

    def handle_line(self, line: bytes) -> bool:
        """Handle one message; False to close the connection."""
        if not self.authenticated:
            return self.server.hello(self, line)
        request_id: Any = None
        try:
            message = decode(line)
            request_id = message.get("id")
            if not isinstance(request_id, str) or not request_id:
                request_id = request_id if isinstance(request_id, (str, int)) else None
                raise ProtocolError(BAD_REQUEST, "every request needs an 'id' string")
            self.server.handle(self, request_id, message)
        except ProtocolError as exc:
            self.send({"id": request_id, "ok": False, "error": error_body(exc.code, str(exc))})
        except MattekitError as exc:
            self.send({"id": request_id, "ok": False,
                       "error": error_body(code_for(exc) or INTERNAL, str(exc))})
        except Exception as exc:
            log.exception("request %r from %s failed", request_id, self.label)
            self.send({"id": request_id, "ok": False, "error": error_body(
                INTERNAL, f"internal error: {exc!r}; see {self.server.log_path}")})
        return True


class WorkerServer:
    """The worker: listens on 127.0.0.1, authenticates, schedules renders fairly."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.home = config.home
        self.token = read_or_create_token(self.home)
        self.cache_root = config.cache_root.expanduser().resolve()
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.roots = resolved_roots([self.cache_root, *config.allow_roots])
        self.device, self.providers = _providers_for(config.device)
        self.log_path = self.home / "worker.log"
        self.pool = EnginePool(config.idle_timeout, factory=self._create_engine)
        self.scheduler = Scheduler(self._start_request)
        self.started = time.time()
        self._clock = time.monotonic()
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._manifest: Optional[tuple[tuple[int, int], Manifest]] = None
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if os.name == "nt":
            self.listener.setsockopt(socket.SOL_SOCKET,
                                     getattr(socket, "SO_EXCLUSIVEADDRUSE", socket.SO_REUSEADDR),
                                     1)
        else:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, config.port))
        self.listener.listen(64)
        self.listener.settimeout(ACCEPT_POLL_SECONDS)
        self.port: int = self.listener.getsockname()[1]

    def _create_engine(self, name: str, device: str, params: Any) -> Any:
        """A new engine; ``shot:NAME`` engines come from this worker's cache root."""
        return create_engine(name, device, params, cache_root=self.cache_root)

    # -- life cycle ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": HOST, "port": self.port, "version": __version__,
                "protocol": PROTOCOL_VERSION, "started": self.started}

    def serve_forever(self) -> None:
        """Publish worker.json, then accept connections until shutdown."""
        write_worker_file(self.home, self.info())
        log.info("listening on %s:%d (pid %d, cache %s, roots %s)", HOST, self.port,
                 os.getpid(), self.cache_root, ", ".join(map(str, self.roots)))
        threading.Thread(target=self._janitor, daemon=True, name="mattekit-janitor").start()
        try:
            while not self._stopping.is_set():
                try:
                    sock, address = self.listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                self._accept(sock, address)
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self.stop()

    def _accept(self, sock: socket.socket, address: Any) -> None:
        host = str(address[0])
        if not is_loopback(host):
            log.warning("refused a connection from %s: not loopback", host)
            with suppress(OSError):
                sock.close()
            return
        sock.settimeout(None)
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(self, sock, f"{host}:{address[1]}")
        with self._lock:
            self._connections.add(connection)
        connection.start()

    def _janitor(self) -> None:
        timeout = self.config.idle_timeout
        period = min(max(timeout / 4, 0.05), 5.0) if timeout > 0 else 5.0
        while not self._stopping.wait(period):
            dropped = self.pool.unload_idle()
            if dropped:
                log.info("unloaded %d idle engine(s)", dropped)

    def request_stop(self) -> None:
        """Ask the accept loop to stop (safe from a signal handler or any thread)."""
        self._stopping.set()
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() now where the OS can

    def stop(self) -> None:
        """Cancel all work, let the streams end with `cancelled`, hang up, remove worker.json."""
        self._stopping.set()
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        for request in self.scheduler.cancel_all():
            self._send_cancelled(request, "the worker is shutting down")
        deadline = time.monotonic() + SHUTDOWN_JOIN_SECONDS
        for thread in self.scheduler.threads():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with suppress(OSError):
            self.listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.stop()
        info = read_worker_file(self.home)
        if info is not None and info.get("pid") == os.getpid():
            with suppress(OSError):
                (self.home / WORKER_FILE).unlink()
        self.pool.clear()
        log.info("stopped")

    def connection_closed(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
        self.scheduler.cancel_owner(connection)

    def manifest(self) -> Manifest:
        """The engine manifest, parsed again only when its file changes (a YAML parse costs
        about 15 ms, a large part of a cache hit's budget)."""
        try:
            stat = MANIFEST_PATH.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return load_manifest()  # raises the EngineError naming the file
        with self._lock:
            cached = self._manifest
        if cached is not None and cached[0] == stamp:
            return cached[1]
        manifest = load_manifest()
        with self._lock:
            self._manifest = (stamp, manifest)
        return manifest

    # -- ops ----------------------------------------------------------------------------------

    def hello(self, connection: Connection, line: bytes) -> bool:
        """The first message of a connection: authenticate it or hang up."""
        try:
            message = decode(line)
        except ProtocolError:
            message = {}
        token_ok = message.get("op") == "hello" and self._token_ok(message.get("token"))
        if not token_ok:
            log.warning("refused %s: no hello with the right token", connection.peer)
            connection.send({"op": "hello", "ok": False, "error": error_body(
                UNAUTHORIZED, "the first message must be hello with the token from the "
                              "worker's home folder")})
            return False
        protocol = message.get("protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            connection.send({"op": "hello", "ok": False, "error": error_body(
                BAD_REQUEST, f"client speaks protocol {protocol!r}, this worker "
                             f"{PROTOCOL_VERSION} (mattekit {__version__})")})
            return False
        client = message.get("client")
        connection.client = client[:200] if isinstance(client, str) else ""
        connection.authenticated = True
        connection.send({"op": "hello", "ok": True, "version": __version__,
                         "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                         "cache_root": str(self.cache_root)})
        return True

    def _token_ok(self, given: Any) -> bool:
        return token_matches(self.token, given)

    def handle(self, connection: Connection, request_id: str, message: dict[str, Any]) -> None:
        op = message.get("op")
        handlers: dict[str, Callable[[Connection, str, dict[str, Any]], None]] = {
            "ping": self._ping, "models": self._models, "process": self._process,
            "cancel": self._cancel, "status": self._status, "shutdown": self._shutdown,
        }
        handler = handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ProtocolError(BAD_REQUEST, f"unknown op {op!r}; valid ops: "
                                             f"{', '.join(sorted(handlers))}")
        handler(connection, request_id, message)

    def _ping(self, connection: Connection, request_id: str, message: dict[str, Any]) -> None:
        connection.send({"id": request_id, "ok": True, "op": "pong", "version": __version__,
                         "protocol": PROTOCOL_VERSION})

    def _models(self, connection: Connection, request_id: str, message: dict[str, Any]) -> None:
        manifest = self.manifest()
        engines = []
        for name, spec in sorted(manifest.engines.items()):
            model = manifest.models.get(spec.model) if spec.model else None
            installed = True
            if model is not None:
                try:
                    model_path(model)
                except MattekitError:
                    installed = False
            engines.append({"name": name, "node": spec.node,
                            "model": model.model_id if model else None,
                            "licence": model.licence if model else None,
                            "sha256": model.sha256 if model else None,
                            "installed": installed})
        engines.extend(shot_model_entries(self.cache_root, manifest))
        connection.send({"id": request_id, "ok": True, "engines": engines,
                         "nodes": dict(sorted(manifest.default_engines.items()))})

    def _status(self, connection: Connection, request_id: str, message: dict[str, Any]) -> None:
        with self._lock:
            clients = sum(1 for c in self._connections if c.authenticated)
        connection.send({
            "id": request_id, "ok": True, "pid": os.getpid(), "version": __version__,
            "uptime": round(time.monotonic() - self._clock, 3), "device": self.device,
            "providers": self.pool.providers() or self.providers, "clients": clients,
            "models_loaded": self.pool.loaded(),
            "queue": [r.describe() for r in self.scheduler.snapshot()],
        })

    def _shutdown(self, connection: Connection, request_id: str,
                  message: dict[str, Any]) -> None:
        log.info("shutdown asked by %s", connection.label)
        connection.send({"id": request_id, "ok": True})
        self.request_stop()

    def _cancel(self, connection: Connection, request_id: str, message: dict[str, Any]) -> None:
        target = message.get("target")
        if not isinstance(target, str):
            raise ProtocolError(BAD_REQUEST, "cancel needs 'target': the id of a request")
        request = connection.requests.get(target)
        outcome = self.scheduler.cancel(request) if request is not None else None
        connection.send({"id": request_id, "ok": True, "cancelled": outcome is not None})
        if outcome == "queued" and request is not None:
            self._send_cancelled(request, "cancelled before it started")

    def _send_cancelled(self, request: Request, why: str) -> None:
        owner = request.owner
        assert isinstance(owner, Connection)
        owner.requests.pop(request.id, None)
        owner.send({"id": request.id, "event": "error", "ok": False,
                    "error": error_body(CANCELLED, f"request {request.id}: {why}")})

    def _process(self, connection: Connection, request_id: str,
                 message: dict[str, Any]) -> None:
        if request_id in connection.requests:
            raise ProtocolError(BAD_REQUEST, f"request id '{request_id}' is already in flight "
                                             "on this connection")
        try:
            job = job_from_message(message.get("job"), self.cache_root, self.config.device)
            self._check_output(job.out)
        except MattekitError as exc:  # a ProtocolError, or an `out` pattern that cannot parse
            connection.send({"id": request_id, "event": "error", "ok": False,
                             "error": error_body(code_for(exc) or INTERNAL, str(exc))})
            return
        request = Request(id=request_id, owner=connection, job=job, client=connection.client)
        connection.requests[request_id] = request
        self.scheduler.submit(request, lambda position: connection.send(
            {"id": request_id, "event": "queued", "position": position}))

    def _check_output(self, out: Optional[str]) -> None:
        """`out`'s folder must resolve inside an allowed root, and hold the frame token only
        in the file name (each frame's folder would otherwise be a different, unchecked one)."""
        if not out:
            return
        path = Path(out)
        if parse_pattern(out).path_for(1).parent != path.parent:
            raise ProtocolError(BAD_REQUEST, f"job field 'out' '{out}': put the frame token in "
                                             "the file name, not in a folder name")
        if not inside_roots(path.parent, self.roots):
            roots = ", ".join(map(str, self.roots))
            raise ProtocolError(FORBIDDEN_PATH, f"output '{out}' is outside the folders this "
                                                f"worker may write ({roots}); add one with "
                                                "--allow-root or MATTEKIT_WORK_ROOTS")

    # -- rendering ----------------------------------------------------------------------------

    def _start_request(self, request: Request) -> None:
        """Called by the scheduler (its lock held) when a request first gets the turn."""
        request.thread = threading.Thread(target=self._run, args=(request,), daemon=True,
                                          name=f"mattekit-render-{request.id}")
        request.thread.start()

    def _run(self, request: Request) -> None:
        connection = request.owner
        assert isinstance(connection, Connection)
        job = request.job
        started = time.perf_counter()
        final: Optional[dict[str, Any]] = None
        try:
            if request.cancel.is_set():
                raise RenderCancelled("cancelled before it started")
            manifest = self.manifest()
            spec = (engine_spec(job.engine, manifest, self.cache_root) if job.engine
                    else default_engine(job.node, manifest))
            request.total = frame_count(job)
            connection.send({"id": request.id, "event": "started", "total": request.total})

            def on_frame(result: FrameResult) -> None:
                request.done += 1
                connection.send({"id": request.id, "event": "frame", "frame": result.frame,
                                 "path": str(result.path), "cache_hit": result.cache_hit,
                                 "seconds": round(result.seconds, 4), "done": request.done,
                                 "total": request.total})
                self.scheduler.checkpoint(request)

            key, engine = self.pool.checkout(spec.name, job.device, job.params,
                                             spec.shot.sha256 if spec.shot else "")
            try:
                report = render(job, on_frame=on_frame, cancel=request.cancel, engine=engine)
            finally:
                self.pool.checkin(key, engine)
            final = {"id": request.id, "event": "done", "ok": True,
                     "frames": len(report.frames), "computed": report.computed,
                     "cached": report.cached, "engine": report.engine,
                     "colorspace": report.colorspace,
                     "seconds": round(time.perf_counter() - started, 4)}
        except Exception as exc:
            code = code_for(exc)
            if code is None:
                log.error("request %s from %s failed:\n%s", request.id, connection.label,
                          traceback.format_exc())
                text = f"internal error: {exc!r}; the traceback is in {self.log_path}"
                code = INTERNAL
            else:
                text = str(exc)
                log.info("request %s from %s: %s: %s", request.id, connection.label, code, text)
            final = {"id": request.id, "event": "error", "ok": False,
                     "error": error_body(code, text)}
        finally:
            connection.requests.pop(request.id, None)
            if final is not None:
                connection.send(final)
            self.scheduler.finish(request)
