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
    MissingFramesError,
    OutputError,
    RenderCancelled,
)
from mattekit.inference.exrio import ExrImage, read_image, write_exr
from mattekit.inference.foreground import premultiplied_foreground
from mattekit.inference.plate import load_plate
from mattekit.inference.sequence import (
    FramePattern,
    format_frame_list,
    frames_for,
    parse_pattern,
    require_frames,
)
from mattekit.inference.warmup import Timeline, build_timeline

RESULT_FILE = "matte.exr"
STATE_FILE = "state.npz"
JUMP_MARK = "jump"  # joins the key chain where a render's timeline skips frames (an anchor)
INTEGER_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs; the CLI, the worker and the farm all build one of these."""

    node: str
    plate: str
    out: Optional[str] = None
    clean_plate: Optional[str] = None
    mask: Optional[str] = None
    reference: Optional[str] = None   # parallax-matte's second view (else the plate offset)
    coarse: Optional[str] = None
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
    all_or_nothing: bool = False  # on error, withdraw the outputs this render published (farm)


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
    check_aspect(image, shape, path, frame)
    warnings.warn(f"{path}, frame {frame}: {w}x{h} resampled to the plate's {width}x{height}",
                  InputWarning, stacklevel=2)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if w > width
                      else cv2.INTER_LINEAR)


def check_aspect(image: np.ndarray, shape: tuple[int, int], path: Path, frame: int) -> None:
    """InputError naming file and frame when `image` has another aspect ratio than the plate
    (more than 1 % off): resampling it would distort it."""
    (height, width), (h, w) = shape, image.shape[:2]
    if abs((w / h) / (width / height) - 1.0) > 0.01:
        raise InputError(f"is {w}x{h} but the plate is {width}x{height} (a different aspect "
                         "ratio): reformat it to the plate's format first", path, frame)


def mask_of(image: ExrImage, path: Path, frame: int) -> np.ndarray:
    """The matte a mask input carries: its alpha, else its first channel (a Roto's output)."""
    if image.alpha is not None:
        return np.clip(image.alpha, 0.0, 1.0)
    if image.rgb is None:
        raise InputError("has neither alpha nor RGB to use as a mask", path, frame)
    return np.clip(np.ascontiguousarray(image.rgb[..., 0]), 0.0, 1.0)


def check_key_mask(mask: np.ndarray, path: Path, frame: int) -> None:
    """A key mask must name a target: InputError naming file and frame when it is empty."""
    if not np.any(mask > 0.5):
        raise InputError("the key mask is empty (no pixel above 0.5): draw the target on this "
                         "frame, or delete the file so the frame is not a key frame", path, frame)


def warmup_count(params: Mapping[str, Any]) -> Optional[int]:
    """The ``warmup_frames`` parameter of a temporal engine: a count (0 when it has none), or
    None for -1, "from the first frame of the shot"."""
    value = params.get("warmup_frames", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < -1 \
            or int(value) != value:
        raise MattekitError(f"warmup_frames is {value!r}; it must be a whole number >= 0, "
                            "or -1 for the whole shot before the first rendered frame")
    return None if value == -1 else int(value)


def parallel_digests(paths: Sequence[Path], threads: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(digest_file, paths))


class _Renderer:
    """One render in progress: owns the engine, converters, cache and thread pools."""

    def __init__(self, job: RenderJob, cancel: Optional[threading.Event], engine: Any = None):
        self.job = job
        self.cancel = cancel
        manifest = load_manifest()
        self.spec = (engine_spec(job.engine, manifest, job.cache_root) if job.engine
                     else default_engine(job.node, manifest))
        if self.spec.node != job.node:
            raise MattekitError(
                f"engine '{self.spec.name}' belongs to node '{self.spec.node}', not '{job.node}'"
            )
        self.pattern: FramePattern = parse_pattern(job.plate)
        requested = frames_for(self.pattern, job.frames)
        require_frames(self.pattern, requested)
        outputs = output_paths(job.out, requested)
        if outputs:
            for folder in sorted({p.parent for p in outputs}):
                ensure_writable_folder(folder)
        self.params = {**self.spec.defaults, **job.params}
        self.key_paths = self._key_inputs(requested)
        self.timeline = self._timeline(requested)
        self.frames = self.timeline.frames  # every frame the engine sees, warm-up included
        self.paths = [self.pattern.path_for(f) for f in self.frames]
        self.outputs: Optional[list[Optional[Path]]] = (
            None if outputs is None else [None] * self.timeline.first_output + list(outputs))
        self.offset_frames: list[int] = []  # the plate frame each reference is, when offset
        self.extra_paths = self._extra_inputs()
        self._stills: dict[Path, np.ndarray] = {}
        self._stills_lock = threading.Lock()
        self.config = ocio.load_config(job.ocio_config)
        self.input_space = default_input_space(self.config, self.paths[0], job.colorspace)
        # a warm engine may be handed in (the worker keeps models loaded between requests)
        self.engine = engine or create_engine(self.spec.name, job.device, job.params, manifest,
                                              job.cache_root)
        self.to_engine = ocio.Converter(self.config, self.input_space, self.engine.input_space,
                                        threads=job.io_threads)
        self.to_input = self.to_engine.inverse()
        self.cache = (FrameCache(job.cache_root or FrameCache.default_root(),
                                 max_bytes=FrameCache.default_max_bytes())
                      if job.use_cache else None)
        self.key_params = {
            "engine_version": self.engine.version,
            "params": self.params,
            "colorspace": self.input_space,
            "ocio": ocio.config_name(self.config),
            "compression": job.compression,
            "pixel_type": job.pixel_type,
        }
        self.keys = self._frame_keys(self._input_digests())
        self.published: list[Path] = []  # outputs made visible by this render (list.append: atomic)

    def _given_inputs(self) -> dict[str, str]:
        """The engine's other inputs the job names (clean plate, mask), checked against the
        engine: a required one missing or one the engine does not take is an error."""
        given = {"clean_plate": self.job.clean_plate, "mask": self.job.mask,
                 "reference": self.job.reference, "coarse": self.job.coarse}
        named: dict[str, str] = {}
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
            named[name] = pattern_text
        return named

    def _key_inputs(self, requested: Sequence[int]) -> dict[str, dict[int, Path]]:
        """Key-frame inputs (a video-matte mask): frame -> file for the frames on disk. A
        still is the key of the shot's first frame. Key frames without a plate frame are an
        error; requested frames before the first key are rendered unguided, with a warning."""
        keys: dict[str, dict[int, Path]] = {}
        plate_frames = self.pattern.glob() if self.pattern.is_sequence else list(requested)
        for name, pattern_text in self._given_inputs().items():
            if name not in self.spec.key_inputs:
                continue
            pattern = parse_pattern(pattern_text)
            if not pattern.is_sequence:
                require_frames(pattern, [0])
                keys[name] = {plate_frames[0]: pattern.path_for(0)}
                continue
            on_disk = pattern.glob()
            if not on_disk:
                raise MissingFramesError("no key frames on disk (a key-frame sequence needs at "
                                         "least one frame, e.g. the first frame's Roto)",
                                         pattern.text)
            orphans = sorted(set(on_disk) - set(plate_frames))
            if orphans:
                raise InputError(
                    f"key frame(s) {format_frame_list(orphans)} have no plate frame (plate "
                    f"frames on disk: {format_frame_list(plate_frames)}); renumber the mask "
                    "to the plate's frames or remove those files", pattern.text, orphans[0])
            keys[name] = {f: pattern.path_for(f) for f in on_disk}
            unguided = [f for f in requested if f < on_disk[0]]
            if unguided:
                warnings.warn(f"{pattern.text}: frames {format_frame_list(unguided)} come "
                              f"before the first key frame ({on_disk[0]}) and are not locked "
                              "to a target", InputWarning, stacklevel=3)
        return keys

    def _timeline(self, requested: Sequence[int]) -> Timeline:
        """Warm-up (and anchor) frames before the requested ones, for a temporal engine."""
        if not self.spec.temporal or not self.pattern.is_sequence:
            return Timeline(frames=list(requested), first_output=0, jump_index=None)
        keys = sorted({f for frames in self.key_paths.values() for f in frames})
        return build_timeline(requested, set(self.pattern.glob()), warmup_count(self.params),
                              keys)

    def _extra_inputs(self) -> dict[str, list[Optional[Path]]]:
        """Files of the engine's other inputs for every frame of the timeline: a key input
        has a file on its key frames only (None elsewhere); otherwise a still (no frame token)
        serves every frame and a sequence must cover the whole range."""
        paths: dict[str, list[Optional[Path]]] = {}
        for name, pattern_text in self._given_inputs().items():
            if name in self.key_paths:
                keys = self.key_paths[name]
                paths[name] = [keys.get(f) for f in self.frames]
                continue
            pattern = parse_pattern(pattern_text)
            found: list[Optional[Path]] = list(require_frames(
                pattern, self.frames if pattern.is_sequence else self.frames[:1]))
            paths[name] = found if pattern.is_sequence else found * len(self.frames)
        if "reference" in self.spec.inputs and "reference" not in paths:
            paths["reference"] = list(self._offset_references())
        return paths

    def _offset_references(self) -> list[Path]:
        """The second view of each frame when no reference is given: the plate
        ``reference_offset`` frames away, or as far the other way where that frame is not on
        disk (the end of a shot), with a warning; an InputError naming the missing file and
        frame when neither exists."""
        offset = self.params.get("reference_offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise MattekitError(f"reference_offset is {offset!r}; it must be a whole number "
                                "of frames (e.g. 2 or -2)")
        if not self.pattern.is_sequence:
            raise MattekitError(f"{self.job.plate}: the plate is a single image, so "
                                f"{self.job.node} has no frame to offset: give --reference")
        if offset == 0:
            warnings.warn("reference_offset is 0: the plate is its own reference (no "
                          "parallax): single-frame result", InputWarning, stacklevel=3)
        on_disk = set(self.pattern.glob())
        mirrored: list[int] = []
        for frame in self.frames:
            if frame + offset in on_disk:
                self.offset_frames.append(frame + offset)
            elif frame - offset in on_disk:
                self.offset_frames.append(frame - offset)
                mirrored.append(frame)
            else:
                raise InputError(
                    f"is not on disk: it is the reference of frame {frame} (reference_offset "
                    f"{offset}), and frame {frame - offset} on the other side is missing too; "
                    "render those frames or change the offset",
                    self.pattern.path_for(frame + offset), frame + offset)
        if mirrored:
            warnings.warn(f"{self.job.plate}: frames {format_frame_list(mirrored)} have no "
                          f"frame {offset:+d} on disk; they use frame {-offset:+d} as their "
                          "reference", InputWarning, stacklevel=3)
        return [self.pattern.path_for(f) for f in self.offset_frames]

    def _input_digests(self) -> list[list[str]]:
        """Per frame, the digests of every input file (plate first; "" where a key input has
        no file), and a mark where the timeline jumps (after an anchor frame)."""
        columns: list[Sequence[Optional[Path]]] = [self.paths]
        columns += [self.extra_paths[name] for name in sorted(self.extra_paths)]
        unique = sorted({p for column in columns for p in column if p is not None})
        digest_of = dict(zip(unique, parallel_digests(unique, self.job.io_threads)))
        digests = [[digest_of[path] if path is not None else "" for path in row]
                   for row in zip(*columns)]
        if self.timeline.jump_index is not None:
            digests[self.timeline.jump_index].append(JUMP_MARK)
        return digests

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

    def _colour_input(self, name: str, index: int, shape: tuple[int, int]) -> np.ndarray:
        """An image input (clean plate, reference) for frame `index` in the engine's space; a
        still is decoded and converted once per render, not once per frame (engines never
        modify their inputs)."""
        path = self.extra_paths[name][index]
        if path is None:
            raise MattekitError(f"no {name.replace('_', ' ')} for frame {self.frames[index]}")
        with self._stills_lock:
            if path in self._stills:
                return self._stills[path]
        frame = (self.offset_frames[index] if name == "reference" and self.offset_frames
                 else self.frames[index])
        image = load_plate(path, frame).rgb
        image = self.to_engine.apply(matched_size(image, shape, path, frame))
        if self.spec.clip_input:
            np.clip(image, 0.0, 1.0, out=image)
        given = self._given_inputs().get(name)
        if given is not None and not parse_pattern(given).is_sequence:
            with self._stills_lock:
                self._stills[path] = image
        return image

    def decode(self, index: int) -> _Decoded:
        """Read frame `index` and convert it to the engine's space (runs on a reader thread)."""
        frame = self.frames[index] if self.pattern.is_sequence else None
        image = load_plate(self.paths[index], frame)
        engine_src = self.to_engine.apply(image.rgb)
        if self.spec.clip_input:
            np.clip(engine_src, 0.0, 1.0, out=engine_src)
        inputs: dict[str, np.ndarray] = {}
        shape = engine_src.shape[:2]
        for name in ("clean_plate", "reference"):
            if name in self.extra_paths:
                inputs[name] = self._colour_input(name, index, shape)
        mask_path = self.extra_paths.get("mask", [None] * len(self.frames))[index]
        if mask_path is not None:
            frame_number = self.frames[index]
            mask = mask_of(read_image(mask_path, frame_number), mask_path, frame_number)
            if "mask" in self.key_paths:
                check_key_mask(mask, mask_path, frame_number)
            inputs["mask"] = matched_size(mask, shape, mask_path, frame_number)
        coarse_path = self.extra_paths.get("coarse", [None] * len(self.frames))[index]
        if coarse_path is not None:
            # a coarse alpha keeps its own resolution (the engine upsamples it): aspect checked
            coarse = mask_of(read_image(coarse_path, self.frames[index]), coarse_path,
                             self.frames[index])
            check_aspect(coarse, shape, coarse_path, self.frames[index])
            inputs["coarse"] = coarse
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
            out = self.output(index)
            write_exr(out, fg, result.alpha, **write_args)
            self.published.append(out)
            return FrameResult(self.frames[index], out, False, time.perf_counter() - started)
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
        out = self.output(index)
        link_or_copy(source, out)
        self.published.append(out)
        return FrameResult(self.frames[index], out, hit, time.perf_counter() - started)

    def output(self, index: int) -> Path:
        """The output file of timeline frame ``index`` (a requested frame, never a warm-up)."""
        out = self.outputs[index] if self.outputs is not None else None
        if out is None:
            raise OutputError(f"frame {self.frames[index]} is not an output of this render")
        return out

    # -- planning ---------------------------------------------------------------------------

    def plan(self, entries: Sequence[Optional[CacheEntry]]) -> list[tuple[str, int]]:
        """The work over the timeline, in order: ('publish', i) for hits, ('compute', i) for
        misses, and for a temporal engine the steps that rebuild its state before a miss
        (``restore``). Warm-up frames are never published."""
        steps: list[tuple[str, int]] = []
        engine_after = -1  # the engine's state is that after frame `engine_after` (-1: fresh)
        for i in range(self.timeline.first_output, len(entries)):
            entry = entries[i]
            if entry is not None:
                steps.append(("publish", i))
                continue
            if self.spec.temporal and i > 0 and engine_after != i - 1:
                steps.extend(self.restore(entries, i))
            steps.append(("compute", i))
            engine_after = i
        return steps

    def restore(self, entries: Sequence[Optional[CacheEntry]], i: int) -> list[tuple[str, int]]:
        """Steps that bring the engine to its state after timeline frame i - 1: ('resume', j)
        from the latest cached state before i, else ('reset', -1); then ('replay', j) of the
        frames in between, with ('jump', j) where the timeline skips frames."""
        cached = [j for j, entry in enumerate(entries[:i])
                  if entry is not None and STATE_FILE in entry.files]
        steps: list[tuple[str, int]] = [("resume", cached[-1])] if cached else [("reset", -1)]
        for j in range(cached[-1] + 1 if cached else 0, i + 1):
            if j == self.timeline.jump_index:
                steps.append(("jump", j))
            if j < i:
                steps.append(("replay", j))
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
                    elif action == "jump":
                        jump = getattr(self.engine, "discontinuity", None)
                        if jump is not None:
                            jump()
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
    finished before an error stay valid (in the cache; at the output too unless
    ``job.all_or_nothing``: a farm task's chunk is then published whole or not at all), and no
    partial file is ever left behind.
    """
    renderer = _Renderer(job, cancel, engine)
    try:
        return renderer.run(on_frame)
    except BaseException:
        if job.all_or_nothing:
            for path in renderer.published:
                path.unlink(missing_ok=True)
        raise


def frame_count(job: RenderJob) -> int:
    """How many frames a job will render (for progress bars), without reading any pixels."""
    return len(frames_for(parse_pattern(job.plate), job.frames))
