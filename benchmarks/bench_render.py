"""Render-path benchmark: engine alone, EXR I/O + colour alone, the whole path, a cached re-run.

    .venv/bin/python benchmarks/bench_render.py [--frames 8] [--sizes 1920x1080,3840x2160]

Plates are half-float ZIP EXRs in ACEScg (the pinned config's scene_linear) made from the demo
photo; output is half PIZ, the CLI's default. "I/O alone" is the same render pipeline with the
network replaced by an engine that returns precomputed mattes instantly, so it measures decode,
colour conversion both ways, foreground assembly, encode and cache commit. Figure of merit:
whole / max(engine, I/O), target <= 1.15 (DESIGN.md, "Performance model").
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from mattekit import ocio
from mattekit.inference.demo import camera_move, photo_srgb
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.exrio import write_exr
from mattekit.inference.render import RenderJob, render

WORK = Path(__file__).resolve().parent / "_work"


class ReplayEngine:
    """Stands in for the network: returns mattes computed beforehand, at no cost."""

    temporal = True

    def __init__(self, real, results):
        self.name, self.input_space = real.name, real.input_space
        self.model_hash, self.version = real.model_hash, real.version + "-replay"
        self.cuts_detected = 0
        self._results, self._i = results, 0

    def reset(self):
        self._i = 0

    def state(self):
        return {"i": np.array([self._i])}

    def load_state(self, state):
        self._i = int(state["i"][0])

    def process(self, src):
        result = self._results[self._i % len(self._results)]
        self._i += 1
        return result


def build_plates(folder: Path, frames: int, width: int, height: int):
    config = ocio.load_config()
    to_linear = ocio.Converter(config, ocio.ENGINE_SRGB, "ACEScg")
    clip = camera_move(photo_srgb(), frames, width, height)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(clip):
        write_exr(folder / f"plate.{1001 + i:04d}.exr", to_linear.apply(frame),
                  pixel_type="half", compression="zip")
    return str(folder / "plate.####.exr"), clip


def per_frame(seconds: float, frames: int) -> float:
    return seconds / frames


def bench(width: int, height: int, frames: int) -> dict[str, float]:
    root = WORK / f"{width}x{height}"
    shutil.rmtree(root, ignore_errors=True)
    plate, clip = build_plates(root / "plate", frames, width, height)
    engine = create_engine("rvm", "cpu")
    srgb = [np.ascontiguousarray(f) for f in clip]
    engine.process(srgb[0])  # warm-up: session initialisation
    engine.reset()
    t0 = time.perf_counter()
    results = [engine.process(f) for f in srgb]
    engine_alone = per_frame(time.perf_counter() - t0, frames)
    mattes = [MatteResult(r.alpha.copy(), r.foreground.copy()) for r in results]

    def job(tag: str) -> RenderJob:
        return RenderJob(node="video-matte", plate=plate, out=str(root / tag / "m.####.exr"),
                         cache_root=root / f"cache-{tag}")

    t0 = time.perf_counter()
    render(job("io"), engine=ReplayEngine(engine, mattes))
    io_alone = per_frame(time.perf_counter() - t0, frames)

    engine.reset()
    t0 = time.perf_counter()
    render(job("whole"), engine=engine)
    whole = per_frame(time.perf_counter() - t0, frames)

    engine.reset()
    t0 = time.perf_counter()
    report = render(job("whole"), engine=engine)
    cached = per_frame(time.perf_counter() - t0, frames)
    assert not report.computed, "the re-run should be served from the cache"
    shutil.rmtree(root, ignore_errors=True)
    return {"engine": engine_alone, "io": io_alone, "whole": whole, "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sizes", default="1920x1080,3840x2160")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}")
    print("| size | engine alone s/f | I/O+colour alone s/f | whole path s/f | cached re-run s/f "
          "| whole / max(engine, I/O) | whole / engine |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        r = bench(width, height, args.frames)
        merit = r["whole"] / max(r["engine"], r["io"])
        print(f"| {width}x{height} | {r['engine']:.3f} | {r['io']:.3f} | {r['whole']:.3f} | "
              f"{r['cached'] * 1000:.1f} ms | {merit:.2f} | {r['whole'] / r['engine']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
