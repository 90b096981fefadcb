"""The render path: plate frames -> engine -> premultiplied-foreground + alpha EXRs.

A pipeline with frames in flight: decoding and colour conversion of the next frames and the
encoding of finished ones run on thread pools while the engine works on the current frame
(temporal engines still see frames strictly in order). Every frame goes through the per-frame
cache: a hit costs a digest check and a hard link, and a temporal engine resumes from the
recurrent state stored beside the last cached frame, so editing frame t recomputes t onwards
and nothing before.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Optional, Sequence

import cv2
import numpy as np

from mattekit import ocio
from mattekit.inference import __version__
from mattekit.inference.cache import (
    CacheEntry,
    FrameCache,
    chain_base_key,
    chain_key,
    digest_file,
    frame_key,
    link_or_copy,
)
from mattekit.inference.engines.registry import (
    create_engine,
    default_engine,
    engine_spec,
    load_manifest,
)
from mattekit.inference.errors import (
    FramePatternError,
    InputError,
    InputWarning,
    MattekitError,
    OutputError,
    RenderCancelled,
)
from mattekit.inference.exrio import ExrImage, read_image, write_exr
from mattekit.inference.foreground import premultiplied_foreground
from mattekit.inference.plate import load_plate
from mattekit.inference.sequence import FramePattern, frames_for, parse_pattern, require_frames

RESULT_FILE = "matte.exr"
STATE_FILE = "state.npz"
INTEGER_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs; the CLI, the worker and the farm all build one of these."""

    node: str
    plate: str
    out: Optional[str] = None
    clean_plate: Optional[str] = None
    mask: Optional[str] = None
    frames: Optional[str] = None
    engine: Optional[str] = None
    colorspace: Optional[str] = None
    ocio_config: Optional[str] = None
    device: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)
    compression: str = "piz"
    pixel_type: str = "half"
    cache_root: Optional[Path] = None
    use_cache: bool = True
    io_threads: int = 2


@dataclass(frozen=True)
class FrameResult:
    """One finished frame: where it is, whether it came from the cache, what it cost."""

    frame: int
    path: Path
    cache_hit: bool
    seconds: float


@dataclass
class RenderReport:
    frames: list[FrameResult]
    engine: str
    colorspace: str
    scene_cuts: int = 0

    @property
    def computed(self) -> list[int]:
        return [f.frame for f in self.frames if not f.cache_hit]

    @property
    def cached(self) -> list[int]:
        return [f.frame for f in self.frames if f.cache_hit]


@dataclass
class _Decoded:
    """A plate frame read and converted for the engine."""

    image: ExrImage
    engine_src: np.ndarray
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


def ensure_writable_folder(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there, before any compute."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mattekit-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        cause = exc.strerror or str(exc)
        raise OutputError(f"{folder}: output folder is not writable ({cause})") from exc


def output_paths(out: Optional[str], frames: Sequence[int]) -> Optional[list[Path]]:
    """Output file per frame; several frames need a frame token in the output pattern."""
    if out is None:
        return None
    pattern = parse_pattern(out)
    if len(frames) > 1 and not pattern.is_sequence:
        raise FramePatternError(
            f"--out '{out}' has no frame token but {len(frames)} frames are rendered; "
            "add one, e.g. matte.####.exr"
        )
    if not str(out).lower().endswith(".exr"):
        raise FramePatternError(f"--out '{out}': mattekit writes EXR files; use a .exr name")
    return [pattern.path_for(f) for f in frames]


def default_input_space(config: Any, plate_path: Path, requested: Optional[str]) -> str:
    """The plate's colour space: as requested, else scene_linear for EXR, sRGB for 8/16-bit."""
    if requested:
        return ocio.resolve_colorspace(config, requested)
    integer = plate_path.suffix.lower() in INTEGER_EXTENSIONS
    return ocio.default_colorspace(config, integer)


def matched_size(image: np.ndarray, shape: tuple[int, int], path: Path, frame: int
                 ) -> np.ndarray:
    """`image` at the plate's size: resampled with a warning when only the resolution differs
    (same aspect ratio within 1 %), an InputError naming file and frame otherwise."""
    height, width = shape
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if abs((w / h) / (width / height) - 1.0) > 0.01:
        raise InputError(f"is {w}x{h} but the plate is {width}x{height} (a different aspect "
                         "ratio): reformat it to the plate's format first", path, frame)
    warnings.warn(f"{path}, frame {frame}: {w}x{h} resampled to the plate's {width}x{height}",
                  InputWarning, stacklevel=2)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if w > width
                      else cv2.INTER_LINEAR)


def mask_of(image: ExrImage, path: Path, frame: int) -> np.ndarray:
    """The matte a mask input carries: its alpha, else its first channel (a Roto's output)."""
    if image.alpha is not None:
        return np.clip(image.alpha, 0.0, 1.0)
    if image.rgb is None:
        raise InputError("has neither alpha nor RGB to use as a mask", path, frame)
    return np.clip(np.ascontiguousarray(image.rgb[..., 0]), 0.0, 1.0)


def parallel_digests(paths: Sequence[Path], threads: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(digest_file, paths))


class _Renderer:
    """One render in progress: owns the engine, converters, cache and thread pools."""

    def __init__(self, job: RenderJob, cancel: Optional[threading.Event], engine: Any = None):
        self.job = job
        self.cancel = cancel
        manifest = load_manifest()
        self.spec = (engine_spec(job.engine, manifest) if job.engine
                     else default_engine(job.node, manifest))
        if self.spec.node != job.node:
            raise MattekitError(
                f"engine '{self.spec.name}' belongs to node '{self.spec.node}', not '{job.node}'"
            )
        self.pattern: FramePattern = parse_pattern(job.plate)
        self.frames = frames_for(self.pattern, job.frames)
        self.paths = require_frames(self.pattern, self.frames)
        self.outputs = output_paths(job.out, self.frames)
        if self.outputs:
            for folder in sorted({p.parent for p in self.outputs}):
                ensure_writable_folder(folder)
        self.extra_paths = self._extra_inputs()
        self._stills: dict[Path, np.ndarray] = {}
        self._stills_lock = threading.Lock()
        self.config = ocio.load_config(job.ocio_config)
        self.input_space = default_input_space(self.config, self.paths[0], job.colorspace)
        # a warm engine may be handed in (the worker keeps models loaded between requests)
        self.engine = engine or create_engine(self.spec.name, job.device, job.params, manifest)
        self.to_engine = ocio.Converter(self.config, self.input_space, self.engine.input_space,
                                        threads=job.io_threads)
        self.to_input = self.to_engine.inverse()
        self.cache = (FrameCache(job.cache_root or FrameCache.default_root(),
                                 max_bytes=FrameCache.default_max_bytes())
                      if job.use_cache else None)
        self.params = {**self.spec.defaults, **job.params}
        self.key_params = {
            "engine_version": self.engine.version,
            "params": self.params,
            "colorspace": self.input_space,
            "ocio": ocio.config_name(self.config),
            "compression": job.compression,
            "pixel_type": job.pixel_type,
        }
        self.keys = self._frame_keys(self._input_digests())

    def _extra_inputs(self) -> dict[str, list[Path]]:
        """Files of the engine's other inputs (clean plate, mask) for every frame; a still
        (no frame token) serves every frame, a sequence must cover the whole range."""
        given = {"clean_plate": self.job.clean_plate, "mask": self.job.mask}
        paths: dict[str, list[Path]] = {}
        for name, pattern_text in given.items():
            flag = "--" + name.replace("_", "-")
            if pattern_text is None:
                if name in self.spec.required_inputs:
                    raise MattekitError(f"{self.job.node} needs {flag} (its engine "
                                        f"'{self.spec.name}' mattes against it)")
                continue
            if name not in self.spec.inputs:
                raise MattekitError(f"{flag} is not an input of {self.job.node} "
                                    f"(engine '{self.spec.name}')")
            pattern = parse_pattern(pattern_text)
            paths[name] = require_frames(pattern, self.frames if pattern.is_sequence
                                         else self.frames[:1])
            if not pattern.is_sequence:
                paths[name] = paths[name] * len(self.frames)
        return paths

    def _input_digests(self) -> list[list[str]]:
        """Per frame, the digests of every input file (plate first)."""
        columns = [self.paths] + [self.extra_paths[name] for name in sorted(self.extra_paths)]
        unique = sorted({p for column in columns for p in column})
        digest_of = dict(zip(unique, parallel_digests(unique, self.job.io_threads)))
        return [[digest_of[column[i]] for column in columns] for i in range(len(self.frames))]

    def _frame_keys(self, digests: Sequence[Sequence[str]]) -> list[str]:
        if not self.spec.temporal:
            return [frame_key(self.job.node, self.spec.name, self.engine.model_hash,
                              self.key_params, list(d)) for d in digests]
        base = chain_base_key(self.job.node, self.spec.name, self.engine.model_hash,
                              self.key_params)
        keys: list[str] = []
        previous: Optional[str] = None
        for digest in digests:
            previous = chain_key(previous, base, list(digest))
            keys.append(previous)
        return keys

    def metadata(self, key: str) -> dict[str, str]:
        return {
            "mattekit/version": __version__,
            "mattekit/node": self.job.node,
            "mattekit/engine": self.spec.name,
            "mattekit/model": self.spec.model or "",
            "mattekit/modelSha256": self.engine.model_hash,
            "mattekit/params": json.dumps(self.params, sort_keys=True),
            "mattekit/colorspace": self.input_space,
            "mattekit/ocioConfig": ocio.config_name(self.config),
            "mattekit/cacheKey": key,
        }

    # -- the stages -------------------------------------------------------------------------

    def _clean_plate(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """The clean plate for frame `index` in the engine's space; a still is decoded and
        converted once per render, not once per frame (engines never modify their inputs)."""
        path = self.extra_paths["clean_plate"][index]
        with self._stills_lock:
            if path in self._stills:
                return self._stills[path]
        clean = load_plate(path, self.frames[index]).rgb
        clean = self.to_engine.apply(matched_size(clean, shape, path, self.frames[index]))
        if self.spec.clip_input:
            np.clip(clean, 0.0, 1.0, out=clean)
        if self.job.clean_plate is not None and not parse_pattern(self.job.clean_plate).is_sequence:
            with self._stills_lock:
                self._stills[path] = clean
        return clean

    def decode(self, index: int) -> _Decoded:
        """Read frame `index` and convert it to the engine's space (runs on a reader thread)."""
        frame = self.frames[index] if self.pattern.is_sequence else None
        image = load_plate(self.paths[index], frame)
        engine_src = self.to_engine.apply(image.rgb)
        if self.spec.clip_input:
            np.clip(engine_src, 0.0, 1.0, out=engine_src)
        inputs: dict[str, np.ndarray] = {}
        shape = engine_src.shape[:2]
        if "clean_plate" in self.extra_paths:
            inputs["clean_plate"] = self._clean_plate(index, shape)
        if "mask" in self.extra_paths:
            path = self.extra_paths["mask"][index]
            mask = mask_of(read_image(path, self.frames[index]), path, self.frames[index])
            inputs["mask"] = matched_size(mask, shape, path, self.frames[index])
        return _Decoded(image=image, engine_src=engine_src, inputs=inputs)

    def encode(self, index: int, decoded: _Decoded, result: Any,
               state: Optional[dict[str, np.ndarray]], started: float) -> FrameResult:
        """Build the premultiplied foreground and write the frame (runs on a writer thread)."""
        image = decoded.image
        to_input = self.to_input.apply
        fg = premultiplied_foreground(image.rgb, decoded.engine_src, result.foreground,
                                      result.alpha, to_input)
        layers = dict(getattr(result, "layers", {}) or {})
        key = self.keys[index]
        write_args: dict[str, Any] = {
            "data_window": image.data_window, "display_window": image.display_window,
            "pixel_aspect": image.pixel_aspect, "metadata": self.metadata(key),
            "pixel_type": self.job.pixel_type, "compression": self.job.compression,
            "layers": layers}
        if self.cache is None:
            assert self.outputs is not None
            write_exr(self.outputs[index], fg, result.alpha, **write_args)
            return FrameResult(self.frames[index], self.outputs[index], False,
                               time.perf_counter() - started)
        with self.cache.writer(key) as writer:
            if writer.existing is None:
                write_exr(writer.path(RESULT_FILE), fg, result.alpha, **write_args)
                if state is not None:
                    with open(writer.path(STATE_FILE), "wb") as stream:
                        np.savez(stream, **state)  # type: ignore[arg-type]
                writer.metadata.update({"frame": self.frames[index], "node": self.job.node,
                                        "engine": self.spec.name})
        entry = writer.entry
        if entry is None:
            raise OutputError(f"cache entry {key[:12]} was not published")
        return self.publish(index, entry, hit=False, started=started)

    def publish(self, index: int, entry: CacheEntry, hit: bool, started: float) -> FrameResult:
        """Make a cached result visible at the output path (a hard link when possible)."""
        source = entry.files[RESULT_FILE]
        if self.outputs is None:
            return FrameResult(self.frames[index], source, hit, time.perf_counter() - started)
        link_or_copy(source, self.outputs[index])
        return FrameResult(self.frames[index], self.outputs[index], hit,
                           time.perf_counter() - started)

    # -- planning ---------------------------------------------------------------------------

    def plan(self, entries: Sequence[Optional[CacheEntry]]) -> list[tuple[str, int]]:
        """The work, in order: ('publish', i) for hits, ('compute', i) for misses, and for a
        temporal engine ('resume', i) / ('replay', i) to rebuild the state before a miss."""
        steps: list[tuple[str, int]] = []
        engine_after = -1  # the engine's state is that after frame `engine_after` (-1: fresh)
        for i, entry in enumerate(entries):
            if entry is not None:
                steps.append(("publish", i))
                continue
            if self.spec.temporal and i > 0 and engine_after != i - 1:
                previous = entries[i - 1]
                if previous is not None and STATE_FILE in previous.files:
                    steps.append(("resume", i - 1))
                else:
                    steps.append(("reset", -1))
                    steps.extend(("replay", j) for j in range(i))
            steps.append(("compute", i))
            engine_after = i
        return steps

    def run(self, on_frame: Optional[Callable[[FrameResult], None]]) -> RenderReport:
        entries: list[Optional[CacheEntry]] = (
            [self.cache.lookup(k) for k in self.keys] if self.cache else [None] * len(self.keys)
        )
        steps = self.plan(entries)
        reads = [i for action, i in steps if action in ("compute", "replay")]
        results: list[FrameResult] = []
        threads = max(1, self.job.io_threads)
        with ThreadPoolExecutor(threads, thread_name_prefix="mattekit-read") as readers, \
                ThreadPoolExecutor(threads, thread_name_prefix="mattekit-write") as writers:
            decoded = _prefetch(readers, self.decode, reads, depth=threads + 1)
            pending: deque[Future[FrameResult]] = deque()

            def finish(future: Future[FrameResult]) -> None:
                result = future.result()
                results.append(result)
                if on_frame:
                    on_frame(result)

            try:
                for action, i in steps:
                    if self.cancel is not None and self.cancel.is_set():
                        raise RenderCancelled(f"render cancelled after {len(results)} frames")
                    if action == "publish":
                        entry = entries[i]
                        assert entry is not None
                        pending.append(writers.submit(self.publish, i, entry, True,
                                                      time.perf_counter()))
                    elif action == "resume":
                        entry = entries[i]
                        assert entry is not None
                        with np.load(entry.files[STATE_FILE], allow_pickle=False) as saved:
                            self.engine.load_state({k: saved[k] for k in saved.files})
                    elif action == "reset":
                        self.engine.reset()
                    else:
                        t0 = time.perf_counter()
                        frame = next(decoded)
                        result = self.engine.process(frame.engine_src, frame.inputs)
                        if action == "compute":
                            state = self.engine.state() if self.spec.temporal else None
                            pending.append(writers.submit(self.encode, i, frame, result, state,
                                                          t0))
                    while pending and (pending[0].done() or len(pending) > threads + 1):
                        finish(pending.popleft())
                while pending:
                    finish(pending.popleft())
            except BaseException:
                for future in pending:
                    future.cancel()
                decoded.close()
                raise
        results.sort(key=lambda r: r.frame)
        return RenderReport(frames=results, engine=self.spec.name, colorspace=self.input_space,
                            scene_cuts=getattr(self.engine, "cuts_detected", 0))


def _prefetch(pool: ThreadPoolExecutor, decode: Callable[[int], _Decoded],
              indices: Sequence[int], depth: int) -> Generator[_Decoded, None, None]:
    """Yield decode(i) for each index in order, keeping up to `depth` decodes in flight."""
    queue: deque[Future[_Decoded]] = deque()
    position = 0
    try:
        while position < len(indices) or queue:
            while position < len(indices) and len(queue) < depth:
                queue.append(pool.submit(decode, indices[position]))
                position += 1
            yield queue.popleft().result()
    finally:
        for future in queue:
            future.cancel()


def render(job: RenderJob, on_frame: Optional[Callable[[FrameResult], None]] = None,
           cancel: Optional[threading.Event] = None, engine: Any = None) -> RenderReport:
    """Render a node's matte for every requested frame of the plate.

    `engine`: an already-built engine for the job's engine (kept warm by a caller), else one is
    created from the manifest.

    Raises a MattekitError subclass naming the file, frame and cause on bad input; frames
    finished before an error stay valid, and no partial file is ever left behind.
    """
    return _Renderer(job, cancel, engine).run(on_frame)


def frame_count(job: RenderJob) -> int:
    """How many frames a job will render (for progress bars), without reading any pixels."""
    return len(frames_for(parse_pattern(job.plate), job.frames))
