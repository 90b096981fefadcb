"""Farm benchmark: a 12-frame video-matte job in 3 chunks through `openjd run`, then a re-run.

    .venv/bin/python benchmarks/bench_farm.py [--size 1920x1080] [--frames 12] [--chunk 4]

The job bundle comes from `mattekit farm openjd` (shared cache folder as the job's CacheDir);
`openjd run` executes its tasks locally, each a real `mattekit render` process. The re-run finds
every frame in the cache (each task: a digest check and a hard link per frame), so it costs the
process start-up and the input digests only. Reported: wall time of each run, frames computed /
from the cache, and the ratio re-run / first run.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mattekit import ocio
from mattekit.inference.demo import camera_move, photo_srgb
from mattekit.inference.exrio import write_exr

WORK = Path(__file__).resolve().parent / "_work" / "farm"
BIN = Path(sys.executable).parent


def run_job(bundle: Path) -> tuple[float, int, int]:
    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
    params = json.dumps({v["name"]: v["value"] for v in values})
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "openjd"), "run", str(bundle / "template.yaml"), "-p",
                           params], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr)
    counts = re.findall(r"\((\d+) computed, (\d+) from cache\)", done.stdout)
    return seconds, sum(int(a) for a, _ in counts), sum(int(b) for _, b in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=4)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    shutil.rmtree(WORK, ignore_errors=True)
    plate = WORK / "plate"
    plate.mkdir(parents=True)
    to_linear = ocio.Converter(ocio.load_config(), ocio.ENGINE_SRGB, "ACEScg")
    for i, frame in enumerate(camera_move(photo_srgb(), args.frames, width, height)):
        write_exr(plate / f"plate.{i + 1:04d}.exr", to_linear.apply(frame), compression="zip")
    bundle = WORK / "bundle"
    subprocess.run([str(BIN / "mattekit"), "farm", "openjd", "video-matte", "--plate",
                    str(plate / "plate.####.exr"), "--out", str(WORK / "out" / "m.####.exr"),
                    "--frames", f"1-{args.frames}", "--chunk-size", str(args.chunk),
                    "--cache-dir", str(WORK / "cache"), "--mattekit", str(BIN / "mattekit"),
                    "--bundle", str(bundle)], check=True, capture_output=True)
    first = run_job(bundle)
    again = run_job(bundle)
    print(f"{platform.node()} ({platform.processor() or platform.machine()}), {args.size}, "
          f"{args.frames} frames in chunks of {args.chunk}")
    print("| run | wall s | computed | from cache |")
    print("|---|---|---|---|")
    for name, (seconds, computed, cached) in (("first", first), ("re-run", again)):
        print(f"| {name} | {seconds:.1f} | {computed} | {cached} |")
    print(f"re-run / first run: {again[0] / first[0]:.2f}")


if __name__ == "__main__":
    main()
