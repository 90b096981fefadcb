"""Specification of the per-frame result cache (mattekit.inference.cache)."""
from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from mattekit.inference import cache as cache_module
from mattekit.inference.cache import (
    CacheWarning,
    FrameCache,
    chain_base_key,
    chain_key,
    digest_bytes,
    digest_file,
    frame_key,
    link_or_copy,
)
from mattekit.inference.errors import CacheError, OutputError

PARAMS = {"downsample": 0.25, "mask": True, "erode": 2}


def _key(tag: str) -> str:
    return frame_key("video-matte", "rvm", "model0", PARAMS, [digest_bytes(tag.encode())])


def _store(cache: FrameCache, key: str, payload: bytes, name: str = "result.exr"):
    with cache.writer(key) as w:
        w.path(name).write_bytes(payload)
        w.metadata["frame"] = 1001
    return w.entry


def _leftovers(root: Path) -> list[str]:
    """Everything under tmp/ (temp folders of writers, trash)."""
    return sorted(p.name for p in (root / "tmp").iterdir())


def _entry_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "entries").glob("*/*"))


# -- digests and keys ---------------------------------------------------------------------------


def test_when_a_file_is_digested_then_it_matches_the_digest_of_its_bytes(tmp_path):
    data = os.urandom(3 * (1 << 20) + 123)  # several chunks and a partial one
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert digest_file(path) == digest_bytes(data)
    assert len(digest_file(path)) == 32
    assert digest_bytes(data[:-1] + bytes([data[-1] ^ 1])) != digest_bytes(data)


def test_when_any_part_of_a_frame_changes_then_its_key_changes():
    inputs = ["a" * 32, "b" * 32]
    base = frame_key("video-matte", "rvm", "m1", PARAMS, inputs)
    assert base == frame_key("video-matte", "rvm", "m1", dict(reversed(PARAMS.items())), inputs)
    variants = [
        frame_key("background-matte", "rvm", "m1", PARAMS, inputs),
        frame_key("video-matte", "oavm", "m1", PARAMS, inputs),
        frame_key("video-matte", "rvm", "m2", PARAMS, inputs),
        frame_key("video-matte", "rvm", "m1", {**PARAMS, "downsample": 0.5}, inputs),
        frame_key("video-matte", "rvm", "m1", {**PARAMS, "extra": 1}, inputs),
        frame_key("video-matte", "rvm", "m1", PARAMS, ["a" * 32, "c" * 32]),
        frame_key("video-matte", "rvm", "m1", PARAMS, list(reversed(inputs))),
        frame_key("video-matte", "rvm", "m1", PARAMS, inputs[:1]),
    ]
    assert len(base) == 64
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_when_a_param_is_not_json_then_the_key_raises_cache_error():
    with pytest.raises(CacheError, match="object"):
        frame_key("video-matte", "rvm", "m1", {"bad": object()}, [])


def test_when_frame_10_of_20_is_edited_then_only_keys_from_10_on_change():
    base = chain_base_key("video-matte", "rvm", "m1", PARAMS)
    digests = [digest_bytes(f"frame {t}".encode()) for t in range(1, 21)]
    edited = list(digests)
    edited[9] = digest_bytes(b"frame 10, retouched")  # frame 10 (1-based)

    def chain(frames):
        keys, previous = [], None
        for digest in frames:
            previous = chain_key(previous, base, [digest])
            keys.append(previous)
        return keys

    before, after = chain(digests), chain(edited)
    assert before[:9] == after[:9]
    assert all(b != a for b, a in zip(before[9:], after[9:]))
    assert len(set(before + after)) == 20 + 11


def test_when_the_chain_base_changes_then_the_first_key_changes():
    digest = [digest_bytes(b"frame 1")]
    first = chain_key(None, chain_base_key("video-matte", "rvm", "m1", PARAMS), digest)
    other = chain_key(None, chain_base_key("video-matte", "rvm", "m2", PARAMS), digest)
    assert first != other


# -- store and look up --------------------------------------------------------------------------


def test_when_an_entry_is_stored_then_lookup_returns_its_files_and_metadata(tmp_path):
    cache = FrameCache(tmp_path / "cache")
    key = _key("round trip")
    assert cache.lookup(key) is None
    payload = os.urandom(10_000)
    with cache.writer(key) as w:
        assert w.existing is None
        w.path("result.exr").write_bytes(payload)
        w.path("trimap.exr").write_bytes(b"trimap")
        w.metadata.update({"frame": 1001, "engine": "rvm"})
    entry = cache.lookup(key)
    assert entry is not None
    assert entry.key == key
    assert sorted(entry.files) == ["result.exr", "trimap.exr"]
    assert entry.files["result.exr"].read_bytes() == payload
    assert entry.metadata == {"frame": 1001, "engine": "rvm"}
    manifest_size = (entry.folder / "manifest.json").stat().st_size
    assert entry.size == len(payload) + len(b"trimap") + manifest_size
    assert entry.folder == tmp_path / "cache" / "entries" / key[:2] / key
    assert w.entry is not None and w.entry.key == key
    assert _leftovers(tmp_path / "cache") == []
    assert cache.lookup(key, verify=False) is not None


def test_when_a_writer_writes_nothing_then_it_raises_and_publishes_nothing(tmp_path):
    cache = FrameCache(tmp_path)
    with pytest.raises(CacheError, match="without writing"):
        with cache.writer(_key("empty")):
            pass
    assert _entry_folders(tmp_path) == []
    assert _leftovers(tmp_path) == []


def test_when_a_key_or_file_name_is_unsafe_then_cache_error(tmp_path):
    cache = FrameCache(tmp_path)
    with pytest.raises(CacheError, match="not a cache key"):
        cache.lookup("../../etc")
    with pytest.raises(CacheError, match="usable result file name"):
        with cache.writer(_key("names")) as w:
            w.path("../escape.exr")
    assert _leftovers(tmp_path) == []


def test_when_the_root_is_unusable_then_cache_error_names_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="a-file"):
        FrameCache(blocker / "cache")


def test_when_mattekit_cache_is_set_then_it_is_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MATTEKIT_CACHE", str(tmp_path / "mine"))
    assert FrameCache.default_root() == tmp_path / "mine"
    monkeypatch.delenv("MATTEKIT_CACHE")
    monkeypatch.setattr(cache_module.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert FrameCache.default_root() == tmp_path / "xdg" / "mattekit"
    monkeypatch.setattr(cache_module.sys, "platform", "darwin")
    assert FrameCache.default_root() == Path.home() / "Library" / "Caches" / "mattekit"
    monkeypatch.setattr(cache_module.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert FrameCache.default_root() == tmp_path / "local" / "mattekit" / "cache"


# -- integrity ----------------------------------------------------------------------------------


def _flip_a_byte(entry):
    path = entry.files["result.exr"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "result.exr"


def _truncate(entry):
    path = entry.files["result.exr"]
    path.write_bytes(path.read_bytes()[:-10])
    return "result.exr"


def _delete_manifest(entry):
    (entry.folder / "manifest.json").unlink()
    return "manifest.json"


def _delete_a_file(entry):
    entry.files["result.exr"].unlink()
    return "result.exr"


def _garble_manifest(entry):
    (entry.folder / "manifest.json").write_text("{not json")
    return "manifest.json"


@pytest.mark.parametrize(
    "damage", [_flip_a_byte, _truncate, _delete_manifest, _delete_a_file, _garble_manifest]
)
def test_when_a_cached_entry_is_damaged_then_lookup_misses_warns_and_removes_it(tmp_path, damage):
    cache = FrameCache(tmp_path)
    key = _key("damaged")
    entry = _store(cache, key, os.urandom(4096))
    bad_file = damage(entry)
    with pytest.warns(CacheWarning) as caught:
        assert cache.lookup(key) is None
    message = str(caught[0].message)
    assert key in message and bad_file in message
    assert caught[0].filename == __file__  # stacklevel points at the caller
    assert not entry.folder.exists()
    assert _leftovers(tmp_path) == []
    _store(cache, key, b"recomputed")  # the key can be written again
    assert cache.lookup(key).files["result.exr"].read_bytes() == b"recomputed"


def test_when_verify_is_off_then_a_same_size_corruption_is_not_detected(tmp_path):
    cache = FrameCache(tmp_path)
    key = _key("fast path")
    entry = _store(cache, key, os.urandom(4096))
    _flip_a_byte(entry)
    assert cache.lookup(key, verify=False) is not None
    with pytest.warns(CacheWarning):
        assert cache.lookup(key, verify=True) is None


def test_when_a_writer_finds_a_damaged_entry_then_it_replaces_it(tmp_path):
    cache = FrameCache(tmp_path)
    key = _key("replace")
    _truncate(_store(cache, key, os.urandom(4096)))
    with pytest.warns(CacheWarning, match=key):
        with cache.writer(key) as w:
            assert w.existing is None
            w.path("result.exr").write_bytes(b"fresh")
    assert cache.lookup(key).files["result.exr"].read_bytes() == b"fresh"


def test_when_the_writer_body_raises_then_nothing_is_published_and_no_temp_is_left(tmp_path):
    cache = FrameCache(tmp_path)
    key = _key("boom")
    with pytest.raises(RuntimeError, match="engine failed"):
        with cache.writer(key) as w:
            w.path("result.exr").write_bytes(b"half a frame")
            raise RuntimeError("engine failed")
    assert _entry_folders(tmp_path) == []
    assert _leftovers(tmp_path) == []
    assert cache.lookup(key) is None
    _store(cache, key, b"whole frame")  # the lock was released
    assert cache.lookup(key) is not None


def test_when_metadata_is_not_json_then_cache_error_and_nothing_is_published(tmp_path):
    cache = FrameCache(tmp_path)
    with pytest.raises(CacheError, match="metadata"):
        with cache.writer(_key("bad metadata")) as w:
            w.path("result.exr").write_bytes(b"x")
            w.metadata["bad"] = object()
    assert _entry_folders(tmp_path) == []
    assert _leftovers(tmp_path) == []


# -- concurrency --------------------------------------------------------------------------------


def _write_slowly(root: str, key: str, payload: bytes, hold: float) -> tuple[bool, bytes]:
    """One writer: returns (found an existing entry, bytes now published under the key)."""
    cache = FrameCache(Path(root))
    with cache.writer(key) as w:
        found_existing = w.existing is not None
        if not found_existing:
            w.path("result.exr").write_bytes(payload)
            time.sleep(hold)  # hold the lock so the other writer must wait
    entry = cache.lookup(key)
    return found_existing, entry.files["result.exr"].read_bytes()


def _process_writer(root, key, payload, barrier, results):
    barrier.wait()
    results.put(_write_slowly(root, key, payload, 0.3))


def _assert_one_writer_won(tmp_path, key, outcomes, payloads):
    assert sorted(found for found, _ in outcomes) == [False, True]
    published = {data for _, data in outcomes}
    assert len(published) == 1 and published <= set(payloads)
    assert len(_entry_folders(tmp_path)) == 1
    assert _leftovers(tmp_path) == []
    winner = next(data for found, data in outcomes if not found)
    assert published == {winner}


def test_when_two_threads_write_one_key_then_one_entry_and_the_second_sees_it(tmp_path):
    key = _key("threads")
    payloads = [b"thread one" * 100, b"thread two" * 100]
    barrier = threading.Barrier(2)
    outcomes = []

    def run(payload):
        barrier.wait()
        outcomes.append(_write_slowly(str(tmp_path), key, payload, 0.2))

    threads = [threading.Thread(target=run, args=(p,)) for p in payloads]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(outcomes) == 2
    _assert_one_writer_won(tmp_path, key, outcomes, payloads)
    assert time.monotonic() - started >= 0.2  # the loser waited for the winner's lock


def test_when_two_processes_write_one_key_then_one_entry_and_the_second_sees_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    key = _key("processes")
    payloads = [b"process one" * 100, b"process two" * 100]
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(target=_process_writer, args=(str(tmp_path), key, p, barrier, results))
        for p in payloads
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=20)
        assert process.exitcode == 0
    _assert_one_writer_won(tmp_path, key, outcomes, payloads)


def test_when_an_entry_appears_while_writing_then_the_existing_one_is_kept(tmp_path):
    # What a writer that lost its lock file (removed by hand) would meet at commit time.
    cache = FrameCache(tmp_path)
    key = _key("raced")
    with cache.writer(key) as w:
        w.path("result.exr").write_bytes(b"ours")
        other = FrameCache(tmp_path)
        other._lock = lambda _key: threading.Lock()  # a writer that bypasses the lock
        _store(other, key, b"theirs")
    assert w.entry.files["result.exr"].read_bytes() == b"theirs"
    assert cache.lookup(key).files["result.exr"].read_bytes() == b"theirs"
    assert len(_entry_folders(tmp_path)) == 1
    assert _leftovers(tmp_path) == []


# -- size cap, gc, clear ------------------------------------------------------------------------


def _tick():
    time.sleep(0.02)  # mtime granularity of the LRU clock (coarse on some file systems)


def test_when_over_the_cap_then_the_least_recently_looked_up_entry_goes_first(tmp_path):
    cache = FrameCache(tmp_path)
    keys = [_key(f"lru {i}") for i in range(4)]
    size = _store(cache, keys[0], os.urandom(1000)).size
    for key in keys[1:3]:
        _tick()
        _store(cache, key, os.urandom(1000))
    _tick()
    assert cache.lookup(keys[0]) is not None  # 0 is now more recent than 1 and 2
    cache.max_bytes = int(3.5 * size)
    _tick()
    _store(cache, keys[3], os.urandom(1000))
    present = {entry.key for entry in cache.entries()}
    assert present == {keys[0], keys[2], keys[3]}
    assert cache.total_bytes() <= cache.max_bytes


def test_when_the_cap_is_below_one_entry_then_the_new_entry_still_stays(tmp_path):
    cache = FrameCache(tmp_path, max_bytes=10)
    first, second = _key("big 1"), _key("big 2")
    _store(cache, first, os.urandom(1000))
    _store(cache, second, os.urandom(1000))
    assert [entry.key for entry in cache.entries()] == [second]


def test_when_gc_runs_then_it_evicts_lru_and_removes_stale_temp_and_broken_entries(tmp_path):
    cache = FrameCache(tmp_path)
    keys = [_key(f"gc {i}") for i in range(3)]
    sizes = []
    for key in keys:
        sizes.append(_store(cache, key, os.urandom(2000)).size)
        _tick()
    stale = tmp_path / "tmp" / "w-0123456789abcdef-crashed"
    stale.mkdir()
    (stale / "result.exr").write_bytes(b"abandoned")
    old = time.time() - 2 * 3600
    os.utime(stale / "result.exr", (old, old))
    os.utime(stale, (old, old))
    fresh = tmp_path / "tmp" / "w-fedcba9876543210-running"
    fresh.mkdir()
    broken = tmp_path / "entries" / "ab" / ("ab" * 32)
    broken.mkdir(parents=True)
    (broken / "result.exr").write_bytes(b"no manifest")

    removed = cache.gc(max_bytes=sizes[1] + sizes[2])
    assert removed == ["ab" * 32, keys[0]]
    assert [entry.key for entry in cache.entries()] == keys[1:]
    assert not stale.exists() and fresh.exists()
    assert not broken.exists()
    assert cache.gc() == []  # no cap: nothing evicted
    assert cache.gc(max_bytes=0) == keys[1:]
    assert cache.total_bytes() == 0


def test_when_cleared_then_every_entry_is_gone_and_counted(tmp_path):
    cache = FrameCache(tmp_path)
    for i in range(3):
        _store(cache, _key(f"clear {i}"), b"x" * 100)
    assert cache.clear() == 3
    assert cache.entries() == [] and cache.total_bytes() == 0
    assert _entry_folders(tmp_path) == []
    assert list((tmp_path / "locks").iterdir()) == []
    assert _leftovers(tmp_path) == []
    assert cache.clear() == 0


# -- publishing cached files --------------------------------------------------------------------


def _temp_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_when_a_file_is_published_then_dest_is_identical_and_no_temp_is_left(tmp_path):
    source = tmp_path / "cached.exr"
    source.write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "matte.1001.exr"
    dest.write_bytes(b"stale frame")
    link_or_copy(source, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert os.path.samefile(source, dest)  # a hard link where the file system allows it
    link_or_copy(source, dest)  # publishing again onto the same link is harmless
    assert dest.read_bytes() == source.read_bytes()
    assert _temp_names(out) == []


def test_when_linking_is_impossible_then_the_file_is_copied(tmp_path, monkeypatch):
    def cross_device(_src, _dst, **_kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    source = tmp_path / "cached.exr"
    source.write_bytes(os.urandom(5000))
    dest = tmp_path / "matte.1001.exr"
    link_or_copy(source, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert not os.path.samefile(source, dest)
    assert _temp_names(tmp_path) == []


def test_when_dest_cannot_be_written_then_output_error_names_it(tmp_path):
    source = tmp_path / "cached.exr"
    source.write_bytes(b"abc")
    dest = tmp_path / "missing-folder" / "matte.1001.exr"
    with pytest.raises(OutputError, match="matte.1001.exr"):
        link_or_copy(source, dest)
    with pytest.raises(OutputError, match="gone.exr"):
        link_or_copy(tmp_path / "nothing.exr", tmp_path / "gone.exr")
    assert _temp_names(tmp_path) == []
