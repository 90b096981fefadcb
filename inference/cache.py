"""The per-frame, content-addressed result cache of the worker.

One entry holds the result files of one node at one frame, under a key computed from everything
that decides those pixels: node, engine, model hash, parameters and the digests of the input
frames (``frame_key``). Temporal engines chain the key, ``k_t = H(k_{t-1}, inputs_t)``
(``chain_key``), so editing frame t invalidates t and every frame after it, and nothing before.

Layout under the cache root::

    entries/<key[:2]>/<key>/   result files + manifest.json (names, sizes, xxh3_128 digests,
                               user metadata, creation time); the manifest's mtime is the LRU clock
    locks/<key>.lock           per-key lock serialising concurrent writers of one key
    tmp/w-...                  private folder of an entry being written
    tmp/x-...                  entries being deleted (moved here first, so they vanish atomically)

An entry is built in its private temp folder and moved into ``entries/`` with one directory
rename, manifest included, so nothing half-written is ever visible there. Readers verify sizes
and (by default) digests; an entry that fails is removed, warned about, and reported as a miss.
Integrity never depends on the lock: a rename onto an existing entry fails on every platform,
and the existing entry is then kept. The lock only saves duplicate work.

>>> key = frame_key("video-matte", "rvm", "ab12", {"downsample": 0.25}, ["c0ffee"])
>>> len(key)
64
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import filelock
import xxhash

from mattekit.inference.errors import CacheError, OutputError

__all__ = [
    "CacheEntry",
    "CacheWarning",
    "EntryWriter",
    "FrameCache",
    "chain_base_key",
    "chain_key",
    "digest_bytes",
    "digest_file",
    "frame_key",
    "link_or_copy",
]

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mattekit-cache-entry/1"
#: Temp folders of writers untouched for this long are abandoned (a crashed worker) and removed.
STALE_TEMP_SECONDS = 3600.0
#: How long an in-memory size estimate is trusted before a write rescans the cache (other
#: processes write into the same cache, and only a scan sees their entries).
RESCAN_SECONDS = 30.0
_CHUNK_BYTES = 1 << 20  # 1 MiB: large reads for network file systems, still cache-resident
_KEY_CHARS = frozenset("0123456789abcdef")
_WRITER_PREFIX = "w-"
_TRASH_PREFIX = "x-"


class CacheWarning(UserWarning):
    """A cache entry was found corrupt or incomplete and was removed; the frame is recomputed."""


# --------------------------------------------------------------------------------------------
# Digests and keys


def digest_bytes(data: bytes) -> str:
    """xxh3_128 of ``data`` as 32 hex characters."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_file(path: PathLike) -> str:
    """xxh3_128 of a file's contents as 32 hex characters, read in 1 MiB chunks into one buffer."""
    hasher = xxhash.xxh3_128()
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
    return hasher.hexdigest()


def _json_default(value: Any) -> Any:
    """Canonical JSON for the few non-JSON types that parameters carry (paths, numpy values)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalar / 0-d array
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return tolist()
    if callable(item):
        return item()
    raise TypeError(type(value).__name__)


def _blake2b_json(payload: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise CacheError(
            f"cannot build a cache key: a parameter of type {exc} is not JSON-serialisable; "
            "pass numbers, strings, booleans, lists or dicts"
        ) from exc
    return hashlib.blake2b(text.encode("ascii"), digest_size=32).hexdigest()


def frame_key(
    node: str, engine: str, model_hash: str, params: Mapping[str, Any], input_digests: Sequence[str]
) -> str:
    """Content key of one frame of a non-temporal engine (blake2b-256 hex of canonical JSON).

    ``input_digests`` is ordered (plate, clean plate, mask, ...): swapping inputs changes the key.
    Note that JSON keeps ``1`` and ``1.0`` apart, so hosts must send parameters consistently.
    """
    return _blake2b_json(
        {
            "kind": "mattekit-frame-key/1",
            "node": node,
            "engine": engine,
            "model_hash": model_hash,
            "params": dict(params),
            "inputs": list(input_digests),
        }
    )


def chain_base_key(node: str, engine: str, model_hash: str, params: Mapping[str, Any]) -> str:
    """The ``base_key`` of a temporal chain: everything except the frames themselves."""
    return _blake2b_json(
        {
            "kind": "mattekit-chain-base/1",
            "node": node,
            "engine": engine,
            "model_hash": model_hash,
            "params": dict(params),
        }
    )


def chain_key(previous_key: str | None, base_key: str, input_digests: Sequence[str]) -> str:
    """Key of frame t of a temporal engine: ``H(k_{t-1}, base, inputs_t)``.

    The first frame of a chain passes ``previous_key=None``. A changed input at frame t changes
    ``k_t`` and, through the chain, every later key; earlier keys are untouched.
    """
    return _blake2b_json(
        {
            "kind": "mattekit-chain-key/1",
            "previous": previous_key,
            "base": base_key,
            "inputs": list(input_digests),
        }
    )


def _check_key(key: str) -> str:
    # Keys become folder names: accept only what frame_key/chain_key produce (lower-case hex).
    if not isinstance(key, str) or not 16 <= len(key) <= 128 or not set(key) <= _KEY_CHARS:
        raise CacheError(
            f"{key!r} is not a cache key (expected 16-128 lower-case hex characters, "
            "as made by frame_key or chain_key)"
        )
    return key


# --------------------------------------------------------------------------------------------
# Entries


@dataclass
class CacheEntry:
    """A complete, published cache entry."""

    key: str
    folder: Path
    files: dict[str, Path]
    metadata: dict[str, Any]
    size: int  # result files + manifest, in bytes
    last_used: float  # the manifest's mtime (seconds since the epoch)
    created: float = 0.0


@dataclass
class EntryWriter:
    """Handed out by ``FrameCache.writer``: write result files into ``path(name)``.

    ``existing`` is the entry for this key when one was already there as the lock was taken
    (another process finished it); callers may then skip their work. After the ``with`` block,
    ``entry`` is the entry now published under the key (ours, or the one that was there first).
    """

    key: str
    folder: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    existing: CacheEntry | None = None
    entry: CacheEntry | None = None

    def path(self, name: str) -> Path:
        """Where to write result file ``name`` (a plain file name, not ``manifest.json``)."""
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..", MANIFEST_NAME)
            or name.startswith(".")
            or any(sep in name for sep in ("/", "\\", ":", "\0"))
        ):
            raise CacheError(
                f"cache entry {self.key}: {name!r} is not a usable result file name "
                f"(a plain name without separators, not {MANIFEST_NAME})"
            )
        return self.folder / name


def _try_acquire(lock: filelock.FileLock) -> bool:
    """One attempt at ``lock``; False when another thread or process holds it."""
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return False
    return True


def _dir_newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for child in folder.iterdir():
        with suppress(OSError):
            newest = max(newest, child.stat().st_mtime)
    return newest


class FrameCache:
    """A size-capped, content-addressed, multi-process-safe cache of per-frame results."""

    def __init__(self, root: PathLike, max_bytes: int | None = None):
        if max_bytes is not None and max_bytes < 0:
            raise CacheError(f"cache size cap must be >= 0 bytes, got {max_bytes}")
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self._entries_dir = self.root / "entries"
        self._locks_dir = self.root / "locks"
        self._tmp_dir = self.root / "tmp"
        try:
            for folder in (self._entries_dir, self._locks_dir, self._tmp_dir):
                folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self._tmp_dir):
                pass  # proves the folder is writable, which mkdir(exist_ok=True) does not
        except OSError as exc:
            raise CacheError(
                f"cache folder {self.root} cannot be used ({exc.strerror or exc}); make it "
                "writable or point MATTEKIT_CACHE at a writable folder"
            ) from exc
        # Size bookkeeping so a write need not rescan every manifest: total after the last scan
        # plus what this instance has written since. Other processes' writes show up at rescan.
        self._size_lock = threading.Lock()
        self._known_total: int | None = None
        self._scanned_at = 0.0

    def __repr__(self) -> str:
        return f"FrameCache({str(self.root)!r}, max_bytes={self.max_bytes!r})"

    @staticmethod
    def default_root() -> Path:
        """``$MATTEKIT_CACHE``, else the platform's per-user cache folder + ``mattekit``."""
        override = os.environ.get("MATTEKIT_CACHE")
        if override:
            return Path(override).expanduser()
        home = Path.home()
        if sys.platform == "win32":
            local = os.environ.get("LOCALAPPDATA")
            base = Path(local) if local else home / "AppData" / "Local"
            return base / "mattekit" / "cache"
        if sys.platform == "darwin":
            return home / "Library" / "Caches" / "mattekit"
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"
        return base / "mattekit"

    @staticmethod
    def default_max_bytes() -> int:
        """``$MATTEKIT_CACHE_MAX_GB`` (gigabytes, may be fractional), else 100 GB."""
        text = os.environ.get("MATTEKIT_CACHE_MAX_GB", "100")
        try:
            gigabytes = float(text)
        except ValueError:
            raise CacheError(
                f"MATTEKIT_CACHE_MAX_GB={text!r} is not a number of gigabytes"
            ) from None
        if gigabytes <= 0:
            raise CacheError(f"MATTEKIT_CACHE_MAX_GB={text!r} must be positive")
        return int(gigabytes * 1024**3)

    # -- paths ---------------------------------------------------------------------------------

    def _folder(self, key: str) -> Path:
        return self._entries_dir / key[:2] / key

    def _lock(self, key: str) -> filelock.FileLock:
        return filelock.FileLock(str(self._locks_dir / f"{key}.lock"))

    # -- reading -------------------------------------------------------------------------------

    def _read_entry(self, key: str, verify: bool) -> tuple[CacheEntry | None, str | None]:
        """(entry, None) on a valid entry, (None, None) when absent, (None, problem) when bad."""
        folder = self._folder(key)
        manifest_path = folder / MANIFEST_NAME
        try:
            manifest_stat = manifest_path.stat()
        except FileNotFoundError:
            return None, (f"{manifest_path}: manifest missing" if folder.is_dir() else None)
        except OSError as exc:
            return None, f"{manifest_path}: {exc.strerror or exc}"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key:
                return None, f"{manifest_path}: not a manifest of this key"
            records = manifest["files"]
            metadata = manifest.get("metadata", {})
            created = float(manifest.get("created", 0.0))
            files: dict[str, Path] = {}
            size = manifest_stat.st_size
            for name, record in records.items():
                if Path(name).name != name or name.startswith("."):
                    return None, f"{manifest_path}: bad file name {name!r}"
                path = folder / name
                expected_size = int(record["size"])
                try:
                    actual_size = path.stat().st_size
                except FileNotFoundError:
                    return None, f"{path}: file missing"
                if actual_size != expected_size:
                    return None, f"{path}: {actual_size} bytes, manifest says {expected_size}"
                if verify and digest_file(path) != record["xxh3_128"]:
                    return None, f"{path}: contents differ from the recorded digest"
                files[name] = path
                size += expected_size
        except FileNotFoundError as exc:  # the entry vanished while we read it (evicted)
            return None, (f"{exc.filename}: vanished while being read" if folder.is_dir() else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, f"{manifest_path}: unreadable manifest ({exc})"
        entry = CacheEntry(key, folder, files, metadata, size, manifest_stat.st_mtime, created)
        return entry, None

    def _mark_used(self, entry: CacheEntry) -> None:
        manifest_path = entry.folder / MANIFEST_NAME
        with suppress(OSError):  # a read-only shared cache still serves hits, without LRU
            os.utime(manifest_path)
            entry.last_used = manifest_path.stat().st_mtime

    def lookup(self, key: str, verify: bool = True) -> CacheEntry | None:
        """The entry for ``key`` if it is complete and intact, else None.

        Checks every file's size and, with ``verify``, its xxh3_128 digest. A corrupt or
        incomplete entry is removed, warned about (``CacheWarning``) and reported as a miss.
        A hit touches the manifest, which is the entry's LRU clock.
        """
        _check_key(key)
        entry, problem = self._read_entry(key, verify)
        if problem is not None:
            entry = self._repair(key, problem, verify, stacklevel=3)
        if entry is not None:
            self._mark_used(entry)
        return entry

    def _repair(
        self, key: str, problem: str, verify: bool, stacklevel: int, locked: bool = False
    ) -> CacheEntry | None:
        """Remove the bad entry of ``key`` under its lock; return a valid entry that replaced it.

        When another process holds the lock it is writing this key, and its commit replaces the
        bad entry; we then only report the miss.
        """
        removed = False
        lock = None if locked else self._lock(key)
        if lock is None or _try_acquire(lock):
            try:
                entry, problem_now = self._read_entry(key, verify)  # may have been replaced
                if problem_now is None:
                    return entry
                problem = problem_now
                removed = self._discard(self._folder(key))
            finally:
                if lock is not None:
                    lock.release()
        action = "removed it" if removed else "it is replaced when the frame is next written"
        warnings.warn(
            f"cache entry {key} is corrupt or incomplete: {problem}; {action}, "
            "the frame will be recomputed",
            CacheWarning,
            stacklevel=stacklevel,
        )
        return None

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, least recently used first (sizes from manifests, no digests)."""
        found = []
        for shard in self._iter_dirs(self._entries_dir):
            for folder in self._iter_dirs(shard):
                entry = self._quick_entry(folder)
                if entry is not None:
                    found.append(entry)
        found.sort(key=lambda e: (e.last_used, e.key))
        return found

    @staticmethod
    def _iter_dirs(folder: Path) -> Iterator[Path]:
        try:
            children = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for child in children:
            with suppress(OSError):
                if child.is_dir(follow_symlinks=False):
                    yield Path(child.path)

    @staticmethod
    def _quick_entry(folder: Path) -> CacheEntry | None:
        manifest_path = folder / MANIFEST_NAME
        try:
            manifest_stat = manifest_path.stat()
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            files = {name: folder / name for name in manifest["files"]}
            size = manifest_stat.st_size + sum(
                int(r["size"]) for r in manifest["files"].values()
            )
            return CacheEntry(
                key=folder.name,
                folder=folder,
                files=files,
                metadata=manifest.get("metadata", {}),
                size=size,
                last_used=manifest_stat.st_mtime,
                created=float(manifest.get("created", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def total_bytes(self) -> int:
        """Bytes held by complete entries (result files + manifests)."""
        return sum(entry.size for entry in self.entries())

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def writer(self, key: str) -> Iterator[EntryWriter]:
        """Build the entry of ``key``: write files at ``w.path(name)``, fill ``w.metadata``.

        Holds the key's lock for the whole block, so concurrent writers of one key run one after
        the other; a later one finds ``w.existing`` set and may skip its work (writing nothing).
        On normal exit the files are digested, the manifest written and the folder moved into
        place with one rename; an entry already there is kept and ours discarded. Then
        least-recently-used entries are evicted if the cache is over ``max_bytes``. On an
        exception the temp folder is removed and the exception propagates.
        """
        _check_key(key)
        with self._lock(key):
            existing, problem = self._read_entry(key, verify=True)
            if problem is not None:
                existing = self._repair(key, problem, True, stacklevel=4, locked=True)
            try:
                temp = Path(
                    tempfile.mkdtemp(prefix=f"{_WRITER_PREFIX}{key[:16]}-", dir=self._tmp_dir)
                )
            except OSError as exc:
                raise CacheError(
                    f"cache folder {self._tmp_dir} is not writable ({exc.strerror or exc})"
                ) from exc
            writer = EntryWriter(key=key, folder=temp, existing=existing)
            try:
                yield writer
                writer.entry = self._commit(writer)
            except OSError as exc:  # a full disk, a quota, a vanished folder: name the cause
                raise CacheError(
                    f"cache entry {key[:16]}: cannot write into {self.root} "
                    f"({exc.strerror or exc}); free some space or point MATTEKIT_CACHE at "
                    "another folder"
                ) from exc
            finally:
                shutil.rmtree(temp, ignore_errors=True)  # gone after a commit; a no-op then
        if writer.entry is not None and writer.existing is None:
            self._account_write(writer.entry)

    def _commit(self, writer: EntryWriter) -> CacheEntry:
        key, temp = writer.key, writer.folder
        names = sorted(p.name for p in temp.iterdir())
        if not names:
            if writer.existing is not None:
                return writer.existing
            raise CacheError(f"cache entry {key}: the writer finished without writing any file")
        records = {}
        size = 0
        for name in names:
            path = temp / name
            if not path.is_file() or path.is_symlink() or name == MANIFEST_NAME:
                raise CacheError(
                    f"cache entry {key}: {path} is not a plain result file; write files only "
                    "at writer.path(name)"
                )
            file_size = path.stat().st_size
            records[name] = {"size": file_size, "xxh3_128": digest_file(path)}
            size += file_size
        manifest = {
            "format": MANIFEST_FORMAT,
            "key": key,
            "created": time.time(),
            "files": records,
            "metadata": writer.metadata,
        }
        try:
            text = json.dumps(manifest, indent=1, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise CacheError(
                f"cache entry {key}: metadata is not JSON-serialisable ({exc}); "
                "use numbers, strings, booleans, lists and dicts"
            ) from exc
        (temp / MANIFEST_NAME).write_text(text, encoding="utf-8")

        destination = self._folder(key)
        destination.parent.mkdir(exist_ok=True)
        for _attempt in range(2):
            if destination.exists():
                # We hold the lock; a valid entry there wins (keep theirs, drop ours).
                current, _problem = self._read_entry(key, verify=True)
                if current is not None:
                    return current
                self._discard(destination)
            try:
                os.rename(temp, destination)
            except OSError as exc:
                # Another writer got there without our lock (a removed lock file): POSIX says
                # ENOTEMPTY/EEXIST, Windows FileExistsError or an access error. Look again.
                if destination.exists():
                    continue
                raise CacheError(
                    f"cache entry {key}: cannot move {temp} to {destination} "
                    f"({exc.strerror or exc})"
                ) from exc
            entry = self._quick_entry(destination)
            if entry is None:  # evicted by another process in the instant since the rename
                raise CacheError(f"cache entry {key} vanished right after it was written")
            return entry
        raise CacheError(f"cache entry {key}: {destination} is occupied by an unusable entry")

    def _account_write(self, entry: CacheEntry) -> None:
        if self.max_bytes is None:
            return
        with self._size_lock:
            known = self._known_total
            if known is not None and time.monotonic() - self._scanned_at < RESCAN_SECONDS:
                self._known_total = known + entry.size
                if self._known_total <= self.max_bytes:
                    return
        self._evict(self.max_bytes, protect={entry.key})

    # -- removal -------------------------------------------------------------------------------

    def _discard(self, folder: Path) -> bool:
        """Move ``folder`` out of ``entries/`` in one rename, then delete it. False if it is gone
        already or cannot be moved (a file held open on Windows)."""
        trash = self._tmp_dir / f"{_TRASH_PREFIX}{folder.name[:16]}-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(folder, trash)
        except OSError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _evict(self, max_bytes: int, protect: set[str]) -> list[str]:
        entries = self.entries()
        total = sum(entry.size for entry in entries)
        evicted = []
        for entry in entries:  # least recently used first
            if total <= max_bytes:
                break
            if entry.key in protect:
                continue
            if self._discard(entry.folder):
                total -= entry.size
                evicted.append(entry.key)
        with self._size_lock:
            self._known_total = total
            self._scanned_at = time.monotonic()
        return evicted

    def gc(self, max_bytes: int | None = None) -> list[str]:
        """Evict least-recently-used entries until the total is <= ``max_bytes`` (default: the
        cache's cap; no eviction when both are None), remove broken entries, abandoned temp
        folders (untouched for an hour) and their unused lock files. Returns the removed keys."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        removed = self._remove_broken_entries()
        self._remove_stale_temp(STALE_TEMP_SECONDS)
        if limit is not None:
            removed.extend(self._evict(limit, protect=set()))
        self._remove_unused_locks(STALE_TEMP_SECONDS)
        return removed

    def clear(self) -> int:
        """Remove every entry (and leftovers of crashed writers); return how many entries went.

        Temp folders of writers still running elsewhere are left to them."""
        count = 0
        for shard in self._iter_dirs(self._entries_dir):
            for folder in self._iter_dirs(shard):
                if self._discard(folder):
                    count += 1
        self._remove_stale_temp(STALE_TEMP_SECONDS)
        self._remove_unused_locks(0.0)
        with self._size_lock:
            self._known_total = None
        return count

    def _remove_broken_entries(self) -> list[str]:
        removed = []
        for shard in self._iter_dirs(self._entries_dir):
            for folder in self._iter_dirs(shard):
                if self._quick_entry(folder) is not None:
                    continue
                if not set(folder.name) <= _KEY_CHARS:
                    continue  # not made by us; leave it alone
                lock = self._lock(folder.name)
                if not _try_acquire(lock):
                    continue  # its writer will replace it
                try:
                    if self._quick_entry(folder) is None and self._discard(folder):
                        removed.append(folder.name)
                finally:
                    lock.release()
        return removed

    def _remove_stale_temp(self, age: float) -> None:
        cutoff = time.time() - age
        for folder in self._iter_dirs(self._tmp_dir):
            if folder.name.startswith(_WRITER_PREFIX):
                try:
                    if _dir_newest_mtime(folder) > cutoff:
                        continue  # a writer may still be working in it
                except OSError:
                    continue
            shutil.rmtree(folder, ignore_errors=True)

    def _remove_unused_locks(self, age: float) -> None:
        """Delete lock files of keys without an entry, not used for ``age`` seconds, and free."""
        cutoff = time.time() - age
        try:
            lock_files = list(self._locks_dir.glob("*.lock"))
        except OSError:
            return
        for lock_path in lock_files:
            key = lock_path.name[: -len(".lock")]
            try:
                if lock_path.stat().st_mtime > cutoff or self._folder(key).exists():
                    continue
            except OSError:
                continue
            lock = filelock.FileLock(str(lock_path))
            if not _try_acquire(lock):
                continue
            try:
                # Unlinked while held: a contender that opened the old inode sees it has no link
                # left and retries on a fresh file (filelock checks st_nlink after locking).
                with suppress(OSError):
                    lock_path.unlink()
            finally:
                lock.release()


# --------------------------------------------------------------------------------------------
# Publishing a cached file


def link_or_copy(source: PathLike, dest: PathLike) -> None:
    """Publish ``source`` at ``dest`` atomically: hard link (or, failing that, copy) to a temp
    name beside ``dest``, then ``os.replace``. Never leaves the temp file behind.

    A hard link shares the cache's bytes: the reader must not modify ``dest`` in place (a
    cache lookup with ``verify=True`` would catch it and drop the entry).
    """
    source, dest = Path(source), Path(dest)
    with suppress(OSError):
        if dest.exists() and os.path.samefile(source, dest):
            return  # already published; renaming a link onto itself would leave the temp name
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        try:
            os.link(source, temp)
        except OSError as link_error:
            if link_error.errno == errno.ENOENT and not source.exists():
                raise
            shutil.copyfile(source, temp)  # cross-device, FAT, no permission to link, ...
        os.replace(temp, dest)
    except OSError as exc:
        with suppress(OSError):
            temp.unlink()
        raise OutputError(
            f"{dest}: cannot publish cached file {source} there ({exc.strerror or exc}); "
            "check that the folder exists and is writable"
        ) from exc
