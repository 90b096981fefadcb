"""Colour conversion of RGB pixels between two colour spaces of an OCIO config, on CPU threads.

Alpha is never converted: nothing here takes it. Values above 1 and below 0 pass through
unclamped (the transforms of the ACES configs are unbounded matrices and curves with linear
extensions).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import PyOpenColorIO as OCIO

from mattekit.inference.errors import ColourError

from .config import config_name, resolve_colorspace

# Each processor is built at OPTIMIZATION_LOSSLESS (the exact curves and composed matrices:
# within 1e-5 of float64 maths, checked against colour-science in tests/test_ocio.py) and with
# OCIO's approximate log/exp/pow added. The faster one is kept only where, on a probe of values,
# it stays within TOLERANCE of the exact one both as it comes out and after the exact inverse
# brings it back. The fast sRGB curves (7e-6 out, 1.5e-5 to 2.6e-5 after the round trip) fail
# this, and must: a network amplifies input error ~70x (7e-6 in sRGB moved RVM's alpha by
# 4.8e-4), and the video-matte parity check allows 1e-4. Matrix-only transforms pass.
TOLERANCE = 1e-5
_LOSSLESS = OCIO.OPTIMIZATION_LOSSLESS
_FAST = OCIO.OptimizationFlags(int(OCIO.OPTIMIZATION_LOSSLESS)
                               | int(OCIO.OPTIMIZATION_FAST_LOG_EXP_POW))

# Arrays of shape (N, 3) are processed as rows of this many pixels (the split never changes
# results: OCIO's CPU ops are per pixel, so any banding gives bit-identical output).
_ROW_PIXELS = 4096
# Below this many pixels one thread does the work; starting threads would cost more.
_MIN_PIXELS_PER_THREAD = 32768


def _probe() -> np.ndarray:
    """Values the optimisation check runs through: dense [-1, 1], scene-linear highlights up to
    the half-float maximum, and mixed triplets for transforms that mix channels."""
    ramp = np.linspace(-1.0, 1.0, 16384)
    highs = np.geomspace(1.0, 65504.0, 4096)
    values = np.concatenate([ramp, highs, -highs[:512]])
    rng = np.random.default_rng(20261124)
    mixed = rng.permuted(np.tile(values, (3, 1)), axis=1).T
    grey = np.repeat(values[:, None], 3, axis=1)
    return np.ascontiguousarray(np.concatenate([grey, mixed]), dtype=np.float32)


def _run(cpu: OCIO.CPUProcessor, rgb: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    cpu.apply(OCIO.PackedImageDesc(out, out.shape[0], 1, 3))
    return out


def _within(fast: np.ndarray, exact: np.ndarray) -> bool:
    finite = np.isfinite(exact)
    if not np.array_equal(finite, np.isfinite(fast)):
        return False
    # relative to the pixel's largest channel: a matrix mixing 6e4 with 0.2 loses the 0.2 to
    # float32 rounding whichever processor runs, so per-channel scaling would blame the curves
    magnitude = np.max(np.abs(np.nan_to_num(exact, nan=0.0, posinf=0.0, neginf=0.0)), axis=-1,
                       keepdims=True)
    scale = np.broadcast_to(np.maximum(1.0, magnitude), exact.shape)[finite]
    return bool(np.all(np.abs(fast[finite] - exact[finite]) <= TOLERANCE * scale))


def _choose_cpu(processor: OCIO.Processor,
                inverse: Optional[OCIO.Processor]) -> tuple[OCIO.CPUProcessor, str]:
    f32 = OCIO.BIT_DEPTH_F32
    exact = processor.getOptimizedCPUProcessor(f32, f32, _LOSSLESS)
    fast = processor.getOptimizedCPUProcessor(f32, f32, _FAST)
    probe = _probe()
    exact_out, fast_out = _run(exact, probe), _run(fast, probe)
    good = _within(fast_out, exact_out)
    if good and inverse is not None:
        back = inverse.getOptimizedCPUProcessor(f32, f32, _LOSSLESS)
        exact_back = _run(back, np.nan_to_num(exact_out, nan=0.0))
        fast_back = _run(back, np.nan_to_num(fast_out, nan=0.0))
        good = _within(fast_back, exact_back)
    if good:
        return fast, "LOSSLESS+FAST_LOG_EXP_POW"
    return exact, "LOSSLESS"


def _rows(rgb: np.ndarray) -> list[np.ndarray]:
    """C-contiguous (rows, width, 3) views covering the array, in order."""
    if rgb.ndim == 3:
        return [rgb]
    count = rgb.shape[0]
    width = min(count, _ROW_PIXELS)
    if width == 0:
        return []
    full = (count // width) * width
    parts = [rgb[:full].reshape(count // width, width, 3)]
    if full < count:
        parts.append(rgb[full:].reshape(1, count - full, 3))
    return parts


def _bands(rgb: np.ndarray, threads: int) -> list[np.ndarray]:
    """Row bands of the array, about one per thread (the same bands for arrays of one shape)."""
    pixels = rgb.shape[0] * (rgb.shape[1] if rgb.ndim == 3 else 1)
    count = max(1, min(threads, pixels // _MIN_PIXELS_PER_THREAD))
    bands: list[np.ndarray] = []
    for part in _rows(rgb):
        edges = np.linspace(0, part.shape[0], min(count, part.shape[0]) + 1).astype(int)
        bands.extend(part[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a)
    return bands


# The optimisation check costs ~15 ms per processor: its outcome (and the immutable, thread-safe
# CPU processor) is kept per (config cache id, src, dst) so a cache-hit render stays cheap.
_CHOSEN: dict[tuple[str, str, str], tuple[OCIO.CPUProcessor, str]] = {}
_CHOSEN_LOCK = threading.Lock()


class Converter:
    """Converts float RGB from colour space ``src`` to ``dst`` of ``config``.

    Names are resolved with resolve_colorspace (names, aliases, roles, Nuke spellings). The CPU
    processor is built once; ``apply`` spreads row bands over ``threads`` threads (OCIO releases
    the GIL while it processes). Results do not depend on the number of threads.
    """

    def __init__(self, config: OCIO.Config, src: str, dst: str, threads: int = 2):
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.config = config
        self.src = resolve_colorspace(config, src)
        self.dst = resolve_colorspace(config, dst)
        self.threads = int(threads)
        self._cpu: Optional[OCIO.CPUProcessor] = None
        self.optimization = "none (no-op)"
        if self.src == self.dst:
            return
        try:
            processor = config.getProcessor(self.src, self.dst)
        except Exception as exc:  # OCIO's own Exception types: a missing LUT file, a bad transform
            raise ColourError(
                f"cannot convert '{self.src}' to '{self.dst}' in config {config_name(config)}: "
                f"{' '.join(str(exc).split())}"
            ) from exc
        if not processor.isNoOp():
            key = (config.getCacheID(), self.src, self.dst)
            with _CHOSEN_LOCK:
                chosen = _CHOSEN.get(key)
            if chosen is None:
                try:
                    inverse: Optional[OCIO.Processor] = config.getProcessor(self.dst, self.src)
                except Exception:  # not invertible (e.g. a 3D LUT): check the forward values only
                    inverse = None
                chosen = _choose_cpu(processor, inverse)
                with _CHOSEN_LOCK:
                    _CHOSEN[key] = chosen
            self._cpu, self.optimization = chosen

    @property
    def is_noop(self) -> bool:
        """True when apply only copies (same space, or spaces OCIO finds identical)."""
        return self._cpu is None

    def __repr__(self) -> str:
        return (f"Converter({self.src!r} -> {self.dst!r}, config={config_name(self.config)!r}, "
                f"threads={self.threads}, optimization={self.optimization})")

    def inverse(self) -> "Converter":
        """The converter from ``dst`` back to ``src``, with the same config and threads."""
        return Converter(self.config, self.dst, self.src, threads=self.threads)

    def apply(self, rgb: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Convert float RGB of shape (H, W, 3) or (N, 3).

        Returns a new float32 array, or writes into ``out`` (float32, C-contiguous, same shape)
        and returns it. The input is modified only when ``out`` is ``rgb`` itself.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim not in (2, 3) or rgb.shape[-1] != 3:
            raise ValueError(f"expected RGB of shape (H, W, 3) or (N, 3), got {rgb.shape}")
        if not np.issubdtype(rgb.dtype, np.floating):
            raise ValueError(f"expected float RGB (float32), got {rgb.dtype}")
        if out is None:
            src = np.ascontiguousarray(rgb, dtype=np.float32)
            dst = np.empty_like(src)
        else:
            if (not isinstance(out, np.ndarray) or out.dtype != np.float32
                    or not out.flags.c_contiguous or out.shape != rgb.shape):
                raise ValueError(f"out must be a C-contiguous float32 array of shape {rgb.shape}")
            dst = out
            in_place = _same_memory(out, rgb)
            if not in_place and np.shares_memory(out, rgb):
                raise ValueError("out overlaps rgb without being rgb; pass out=rgb or a new array")
            src = out if in_place else np.ascontiguousarray(rgb, dtype=np.float32)
        self._apply_into(src, dst)
        return dst

    def _apply_into(self, src: np.ndarray, dst: np.ndarray) -> None:
        copy = src is not dst
        dst_bands = _bands(dst, self.threads)
        src_bands = _bands(src, self.threads) if copy else [None] * len(dst_bands)
        pairs = list(zip(src_bands, dst_bands))
        if len(pairs) <= 1:
            for pair in pairs:
                self._band(*pair)
            return
        with ThreadPoolExecutor(max_workers=len(pairs) - 1) as pool:
            futures = [pool.submit(self._band, s, d) for s, d in pairs[1:]]
            self._band(*pairs[0])
            for future in futures:
                future.result()

    def _band(self, src: Optional[np.ndarray], dst: np.ndarray) -> None:
        if src is not None:
            np.copyto(dst, src)
        if self._cpu is not None:
            self._cpu.apply(OCIO.PackedImageDesc(dst, dst.shape[1], dst.shape[0], 3))


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)
