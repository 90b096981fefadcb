"""mattekit worker: the long-lived render process that Nuke sessions and scripts talk to.

    mattekit worker start [--foreground] [--port 0] [--idle-timeout 600] [--allow-root DIR]
    mattekit worker status
    mattekit worker stop

One worker per user and machine: `start` when one already answers does nothing. Without
--foreground the worker is started detached and `start` returns once it listens.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from mattekit.inference.errors import MattekitError
from mattekit.inference.worker.security import HOME_ENV, ensure_home, home_folder

EXIT_ERROR = 1
START_WAIT_SECONDS = 60.0
STOP_WAIT_SECONDS = 40.0
LOCK_FILE = "worker.lock"
OUTPUT_FILE = "worker.out"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535 (0: any free port)")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="worker_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the worker (detached unless --foreground)")
    start.add_argument("--foreground", action="store_true",
                       help="serve in this process until shutdown (logs go to worker.log)")
    start.add_argument("--port", type=_port, default=0, help="TCP port on 127.0.0.1 "
                                                             "(default 0: any free port)")
    start.add_argument("--idle-timeout", type=_seconds, default=600.0, metavar="SECONDS",
                       help="unload engines unused for this long (default 600; 0: never)")
    start.add_argument("--allow-root", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder outputs may be written to, besides the cache "
                            "(repeatable; also $MATTEKIT_WORK_ROOTS)")
    start.add_argument("--cache-dir", type=Path, help="cache folder (default: $MATTEKIT_CACHE "
                                                      "or the user cache folder)")
    start.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="device of requests that do not name one (default auto)")
    for action in (start, actions.add_parser("stop", help="shut the running worker down"),
                   actions.add_parser("status", help="show the running worker's state")):
        action.add_argument("--home", type=Path, help=f"worker home folder (default: "
                                                      f"${HOME_ENV}, else ~/.mattekit)")


def add_worker_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `worker start|stop|status` to the `mattekit` command's subparsers."""
    parser = commands.add_parser("worker", help="start, stop or inspect the render worker",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return parser


def _parsed_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mattekit.inference.worker",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return parser.parse_args(argv)


# -- talking to a running worker -----------------------------------------------------------------

def running_worker(home: Path) -> Optional[dict[str, Any]]:
    """worker.json of a worker that answers ping, else None."""
    from mattekit.inference.worker.client import WorkerClient
    from mattekit.inference.worker.server import read_worker_file

    info = read_worker_file(home)
    if info is None:
        return None
    try:
        with WorkerClient.for_home(home, info, timeout=5.0) as client:
            client.call("ping")
    except (MattekitError, OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return False  # no cheap probe without handles: callers go by worker.json alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the actions ---------------------------------------------------------------------------------

def _serve(args: argparse.Namespace, home: Path) -> int:
    import filelock

    from mattekit.inference.cache import FrameCache
    from mattekit.inference.worker.security import work_roots_from_env
    from mattekit.inference.worker.server import WorkerConfig, WorkerServer, setup_logging

    lock = filelock.FileLock(str(home / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"mattekit: a worker is already starting or running for {home}", file=sys.stderr)
        return 0
    try:
        setup_logging(home)
        config = WorkerConfig(home=home, port=args.port, idle_timeout=args.idle_timeout,
                              cache_root=args.cache_dir or FrameCache.default_root(),
                              allow_roots=[*args.allow_root, *work_roots_from_env()],
                              device=args.device)
        try:
            server = WorkerServer(config)
        except OSError as exc:
            raise MattekitError(f"cannot listen on 127.0.0.1:{args.port} "
                                f"({exc.strerror or exc})") from exc
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
        print(f"mattekit worker {os.getpid()} listening on 127.0.0.1:{server.port} "
              f"(home {home}, cache {server.cache_root})", file=sys.stderr, flush=True)
        server.serve_forever()
        return 0
    finally:
        lock.release()


def _start_detached(args: argparse.Namespace, home: Path) -> int:
    from mattekit.inference.worker.server import read_worker_file

    command = [sys.executable, "-m", "mattekit.inference.worker", "start", "--foreground",
               "--home", str(home), "--port", str(args.port),
               "--idle-timeout", str(args.idle_timeout), "--device", args.device]
    for root in args.allow_root:
        command += ["--allow-root", str(Path(root).expanduser().resolve())]
    if args.cache_dir:
        command += ["--cache-dir", str(Path(args.cache_dir).expanduser().resolve())]
    env = dict(os.environ, **{HOME_ENV: str(home)})
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = (getattr(subprocess, "DETACHED_PROCESS", 0x8)
                                    | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200))
    else:
        options["start_new_session"] = True
    with open(home / OUTPUT_FILE, "ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=output, env=env, cwd=str(home), close_fds=True,
                                   **options)
    deadline = time.monotonic() + START_WAIT_SECONDS
    while time.monotonic() < deadline:
        info = read_worker_file(home)
        if info is not None and info.get("pid") == process.pid:
            print(f"mattekit worker {process.pid} listening on {info['host']}:{info['port']}")
            return 0
        if process.poll() is not None:
            other = running_worker(home)
            if process.returncode == 0 and other is not None:
                print(f"mattekit worker {other['pid']} is already running on "
                      f"{other['host']}:{other['port']}")
                return 0
            raise MattekitError(f"the worker exited with status {process.returncode} before "
                                f"listening; see {home / OUTPUT_FILE} and {home / 'worker.log'}")
        time.sleep(0.05)
    raise MattekitError(f"the worker (pid {process.pid}) did not start listening within "
                        f"{START_WAIT_SECONDS:.0f} s; see {home / 'worker.log'}")


def _start(args: argparse.Namespace, home: Path) -> int:
    info = running_worker(home)
    if info is not None:
        print(f"mattekit worker {info['pid']} is already running on "
              f"{info['host']}:{info['port']}")
        return 0
    if args.foreground:
        return _serve(args, home)
    return _start_detached(args, home)


def _connect(home: Path) -> Any:
    from mattekit.inference.worker.client import WorkerClient, WorkerUnavailable
    from mattekit.inference.worker.server import WORKER_FILE, read_worker_file

    info = read_worker_file(home)
    if info is None:
        raise WorkerUnavailable(f"no mattekit worker is running (no {home / WORKER_FILE}); "
                                "start one with `mattekit worker start`")
    try:
        return info, WorkerClient.for_home(home, info, timeout=5.0)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise WorkerUnavailable(f"no mattekit worker answers at {info.get('host')}:"
                                f"{info.get('port')} (stale {home / WORKER_FILE}: {exc})") \
            from exc


def _status(home: Path) -> int:
    info, client = _connect(home)
    with client:
        status = client.call("status")
    print(f"mattekit worker {status['pid']} (version {status['version']}) on "
          f"{info['host']}:{info['port']}, up {status['uptime']:.0f} s")
    print(f"  home {home}; cache {client.hello.get('cache_root')}")
    print(f"  device {status['device']} ({', '.join(status['providers']) or 'no providers'})")
    print(f"  engines loaded: {', '.join(status['models_loaded']) or 'none'}")
    print(f"  clients: {status['clients']}")
    queue = status["queue"]
    print(f"  queue: {len(queue) or 'empty'}")
    for entry in queue:
        progress = f"{entry['done']}/{entry['total'] if entry['total'] is not None else '?'}"
        print(f"    {entry['id']:>8}  {entry['state']:<8} {entry['node']:<18} {progress:>9}  "
              f"{entry['client']}")
    return 0


def _stop(home: Path) -> int:
    from mattekit.inference.worker.client import WorkerUnavailable
    from mattekit.inference.worker.server import WORKER_FILE

    try:
        info, client = _connect(home)
    except WorkerUnavailable as exc:
        print(f"mattekit: {exc}", file=sys.stderr)
        return 0
    with client:
        client.call("shutdown")
    pid = int(info["pid"])
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while time.monotonic() < deadline:
        if not (home / WORKER_FILE).exists() and not _pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        raise MattekitError(f"the worker (pid {pid}) did not stop within "
                            f"{STOP_WAIT_SECONDS:.0f} s")
    print(f"stopped mattekit worker {pid}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed `worker` action; MattekitError propagates (the caller prints it)."""
    home = ensure_home(home_folder(args.home))
    if args.worker_action == "start":
        return _start(args, home)
    if args.worker_action == "stop":
        return _stop(home)
    return _status(home)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m mattekit.inference.worker`: errors are one line on stderr and exit 1."""
    args = _parsed_args(argv)
    try:
        return run(args)
    except MattekitError as exc:
        print(f"mattekit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mattekit: interrupted", file=sys.stderr)
        return 130
