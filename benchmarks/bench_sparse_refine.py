"""sparse-4k-refine dev benchmark at 3840x2160, built from ../shared/data/alphamatting-dev.

Accuracy case ("mosaic"): twelve of the 13 real photos (GT01-GT12) at their native resolution,
each centre-cropped to at most 960x720 and centred in one cell of a 4x3 grid of 960x720 cells
over an 18 % grey canvas (alpha 0). No pixel is resampled, so the ground-truth alpha is exact at
full resolution. The coarse alpha is that ground truth area-downsampled to 512 px on the long
side (an ideal coarse network at RVM's working size: the table measures only what full-resolution
refinement adds over the bilinear upsample, not a network's semantic errors).

Clip ("pan"): 16 frames of the mosaic panned 1 px per frame (integer shifts: exact ground truth)
with fresh grain each frame (sigma 0.004 sRGB), each frame's coarse alpha made as above.

Timing and memory: `refine_frame` on the mosaic frame and on single photos upscaled (bicubic) to
cover 3840x2160 and centre-cropped (one subject per frame, as a shot usually has; |K| is then
well under 15 %), tile-sparse vs the same refinement on one rectangle covering the frame
(dense), inputs prepared beforehand. Seconds: best of --repeats
runs. Peak memory: tracemalloc peak of the call (numpy and OpenCV outputs are numpy arrays,
traced), inputs excluded. End to end: `mattekit render sparse-4k-refine` on the 4K EXR (half
float) in a child process, no cache: the child's own peak RSS (getrusage RUSAGE_SELF ru_maxrss).

    .venv/bin/python benchmarks/bench_sparse_refine.py [--repeats 2] [--clip-frames 16]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alphamatting import DATA, srgb_to_linear  # noqa: E402

from mattekit.inference import metrics  # noqa: E402
from mattekit.inference.cleanplate import downsized, resized_to  # noqa: E402
from mattekit.inference.engines.sparse_refine import ENGINE_VERSION  # noqa: E402
from mattekit.inference.exrio import write_exr  # noqa: E402
from mattekit.inference.keyregion import (  # noqa: E402
    active_tiles,
    feathered_key,
    key_fraction,
    tile_strips,
)
from mattekit.inference.sparse_refine import (  # noqa: E402
    RefineSettings,
    TemporalContext,
    refine_frame,
)

WIDTH, HEIGHT = 3840, 2160
CELL_W, CELL_H = 960, 720
CANVAS = 0.18  # grey of the canvas between the photos, sRGB-encoded
COARSE_SIZE = 512
LOW, HIGH, BAND_WIDTH, FEATHER = 0.02, 0.98, 16, 8  # the engine's defaults
TIMING_PHOTOS = ("GT01", "GT02", "GT13")


def mosaic(pan: int = 0, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """sRGB plate (H, W, 3) and exact alpha (H, W) of the 4x3 grid, shifted right by `pan` px
    (the canvas is `margin` px wider on the left so a pan never runs out of pixels)."""
    plate = np.full((HEIGHT, WIDTH + margin, 3), CANVAS, np.float32)
    alpha = np.zeros((HEIGHT, WIDTH + margin), np.float32)
    for i in range(12):
        name = f"GT{i + 1:02d}.png"
        photo = cv2.cvtColor(cv2.imread(str(DATA / "input" / name)), cv2.COLOR_BGR2RGB)
        truth = cv2.imread(str(DATA / "alpha" / name), cv2.IMREAD_GRAYSCALE)
        h, w = min(photo.shape[0], CELL_H), min(photo.shape[1], CELL_W)
        top, left = (photo.shape[0] - h) // 2, (photo.shape[1] - w) // 2
        y = (i // 4) * CELL_H + (CELL_H - h) // 2
        x = margin + (i % 4) * CELL_W + (CELL_W - w) // 2
        plate[y:y + h, x:x + w] = photo[top:top + h, left:left + w] / 255.0
        alpha[y:y + h, x:x + w] = truth[top:top + h, left:left + w] / 255.0
    start = margin - pan
    return (np.ascontiguousarray(plate[:, start:start + WIDTH]),
            np.ascontiguousarray(alpha[:, start:start + WIDTH]))


def upscaled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """sRGB plate and alpha of one photo upscaled to cover the 4K frame, centre-cropped."""
    photo = cv2.cvtColor(cv2.imread(str(DATA / "input" / name)), cv2.COLOR_BGR2RGB) / 255.0
    truth = cv2.imread(str(DATA / "alpha" / name), cv2.IMREAD_GRAYSCALE) / 255.0
    scale = max(WIDTH / photo.shape[1], HEIGHT / photo.shape[0])
    size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
    big = [np.clip(cv2.resize(x.astype(np.float32), size, interpolation=cv2.INTER_CUBIC), 0, 1)
           for x in (photo, truth)]
    top, left = (size[1] - HEIGHT) // 2, (size[0] - WIDTH) // 2
    return tuple(np.ascontiguousarray(x[top:top + HEIGHT, left:left + WIDTH]) for x in big)


def coarse_of(alpha: np.ndarray) -> np.ndarray:
    return downsized(alpha, COARSE_SIZE)


def key_of(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """K at full resolution with the engine's defaults (as SparseRefineEngine.key_region)."""
    scale = max(coarse.shape) / max(shape)
    small = feathered_key(coarse, LOW, HIGH, BAND_WIDTH * scale, FEATHER * scale)
    return np.clip(resized_to(small, shape), 0.0, 1.0)


def scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {m.name: m.report(m.function(pred, gt)) for m in metrics.METRICS
            if m.name in ("mad", "mse", "grad")}


def timed(call, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (all threads of the process) over `repeats` runs:
    the CPU time is what the ratio is taken on, as other jobs share this machine's cores."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def peak_bytes(call) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def timing_row(name: str, plate: np.ndarray, gt: np.ndarray, settings: RefineSettings,
               args: argparse.Namespace) -> str:
    """One table row: |K|, seconds (best of repeats) and tracemalloc peak, sparse vs dense."""
    coarse = coarse_of(gt)
    coarse_up = resized_to(coarse, gt.shape)
    key = key_of(coarse, gt.shape)

    def run(dense: bool):
        return lambda: refine_frame(plate, coarse_up, key, settings, dense=dense)

    (w_sparse, t_sparse), m_sparse = timed(run(False), args.repeats), peak_bytes(run(False))
    row = f"| {name} | {100 * key_fraction(key):.1f} | {w_sparse:.2f} / {t_sparse:.2f}"
    if args.skip_dense:
        return row + f" | - | - | {m_sparse / 1024**2:.0f} MiB | - | - |"
    (w_dense, t_dense), m_dense = timed(run(True), args.repeats), peak_bytes(run(True))
    return (row + f" | {w_dense:.2f} / {t_dense:.2f} | {t_dense / t_sparse:.2f}x"
            f" | {m_sparse / 1024**2:.0f} MiB | {m_dense / 1024**2:.0f} MiB"
            f" | {m_dense / m_sparse:.2f}x |")


# the CLI in a child process that prints its own peak RSS (KiB) as the last line of stderr
CHILD = ("import resource, sys; from mattekit.inference.cli import main; "
         "code = main(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
         "sys.exit(code)")


def end_to_end_rss(plate: np.ndarray, coarse: np.ndarray, with_coarse: bool) -> float:
    """Peak RSS (GiB) of `mattekit render sparse-4k-refine` on one 4K EXR frame."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_exr(root / "plate.exr", srgb_to_linear(plate), pixel_type="half")
        write_exr(root / "coarse.exr", np.repeat(coarse[..., None], 3, 2), coarse,
                  pixel_type="half")
        command = [sys.executable, "-c", CHILD, "render", "sparse-4k-refine",
                   "--plate", str(root / "plate.exr"), "--colorspace", "lin_rec709",
                   "--out", str(root / "out.exr"), "--no-cache", "--quiet", "--device", "cpu"]
        if with_coarse:
            command += ["--coarse", str(root / "coarse.exr")]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        return int(done.stderr.strip().splitlines()[-1]) / 1024**2  # ru_maxrss: KiB on Linux


def clip_dtssd(frames: int) -> dict[str, float]:
    """dtSSD (x1e2) of the upsampled coarse alpha, the refined alpha without temporal context
    and with the engine's 4-frame clip context, over the panned clip."""
    rng = np.random.default_rng(7)
    settings = RefineSettings()
    context = TemporalContext(4)
    gts, coarse_ups, alone, steadied = [], [], [], []
    for t in range(frames):
        plate, gt = mosaic(pan=t, margin=frames)
        plate = np.clip(plate + rng.normal(0, 0.004, plate.shape).astype(np.float32), 0, 1)
        coarse = coarse_of(gt)
        coarse_up = resized_to(coarse, gt.shape)
        key = key_of(coarse, gt.shape)
        alone.append(refine_frame(plate, coarse_up, key, settings).alpha)
        steadied.append(refine_frame(plate, coarse_up, key, settings, temporal=context).alpha)
        context.next_frame()
        gts.append(gt)
        coarse_ups.append(coarse_up)
        if t == 0:
            size = sum(a.nbytes for a in context.state().values()) / 1024**2
            print(f"clip memory the render cache keeps per 4K frame: {size:.1f} MiB")
    return {name: metrics.DTSSD_SCALE * metrics.dtssd(preds, gts)
            for name, preds in (("coarse", coarse_ups), ("refined, no context", alone),
                                ("refined, 4-frame clips", steadied))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clip-frames", type=int, default=16)
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()

    plate, gt = mosaic()
    coarse = coarse_of(gt)
    coarse_up = resized_to(coarse, gt.shape)
    key = key_of(coarse, gt.shape)
    settings = RefineSettings()
    strips = tile_strips(active_tiles(key), gt.shape)
    computed = sum(r.grown(settings.margin, gt.shape).area for r in strips) / gt.size
    print(f"engine {ENGINE_VERSION}; {WIDTH}x{HEIGHT}; |K| = {100 * key_fraction(key):.1f} % of "
          f"the frame; tiles meeting K {100 * sum(r.area for r in strips) / gt.size:.1f} %; "
          f"computed with margins {100 * computed:.1f} %")

    sparse = refine_frame(plate, coarse_up, key, settings)
    rows = [("coarse, bilinear upsample", scores(coarse_up, gt)),
            ("refined (tile-sparse)", scores(sparse.alpha, gt))]
    if not args.skip_dense:
        dense = refine_frame(plate, coarse_up, key, settings, dense=True)
        inside = key > 0
        print(f"max |sparse - dense| on K: {np.abs(sparse.alpha - dense.alpha)[inside].max():.2e}")
        del dense
    print("\n| alpha | MAD x1e3 | MSE x1e3 | Grad /1e3 |\n|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['mad']:.2f} | {s['mse']:.2f} | {s['grad']:.2f} |")
    print(f"Grad change {100 * (rows[1][1]['grad'] / rows[0][1]['grad'] - 1):+.1f} %, "
          f"MAD change {100 * (rows[1][1]['mad'] / rows[0][1]['mad'] - 1):+.1f} %")

    print("\n| timing case | K % | sparse s/frame wall / CPU | dense wall / CPU | dense/sparse "
          "(CPU) | peak memory sparse | dense | dense/sparse |\n|---|---|---|---|---|---|---|---|")
    cases = [("mosaic", plate, gt)] + [(f"{name} upscaled", *upscaled(f"{name}.png"))
                                       for name in TIMING_PHOTOS]
    for name, case_plate, case_gt in cases:
        print(timing_row(name, case_plate, case_gt, settings, args), flush=True)

    if not args.skip_end_to_end:
        for with_coarse in (True, False):
            gib = end_to_end_rss(plate, coarse, with_coarse)
            what = "--coarse given" if with_coarse else "RVM coarse pass"
            print(f"end to end, one 4K frame ({what}): peak RSS {gib:.2f} GiB")

    if args.clip_frames >= 2:
        print(f"\n| {args.clip_frames}-frame 4K pan | dtSSD x1e2 |\n|---|---|")
        for name, value in clip_dtssd(args.clip_frames).items():
            print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
