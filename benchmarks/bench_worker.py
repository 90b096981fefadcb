"""Worker round-trip benchmark: a cache-hit process request (1 frame, 1920x1080 half EXR plate).

    .venv/bin/python benchmarks/bench_worker.py [--requests 50] [--size 1920x1080]

Starts a real worker (`python -m mattekit.inference.worker start --foreground`) with a private
home and cache under benchmarks/_work/, renders the frame once (cache miss, engine warm-up),
then times the same request again and again, every one a cache hit, end to end from the
client's side:

- fresh connection: connect + hello + process + every event up to done, then close
  (what a host does when it does not keep its connection);
- kept connection: process + events up to done on one authenticated connection.

The output goes to a folder inside the worker's cache root, so each hit also publishes the
frame there (a hard link). For scale, the same cache-hit job through `render()` in this
process (no worker, engine already built) is timed too: the difference is the worker's own
cost (socket, JSON, scheduling). Target: p50 and p99 under 20 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mattekit import ocio
from mattekit.inference.demo import camera_move, photo_srgb
from mattekit.inference.engines.registry import create_engine
from mattekit.inference.exrio import write_exr
from mattekit.inference.render import RenderJob, render
from mattekit.inference.worker.client import WorkerClient

WORK = Path(__file__).resolve().parent / "_work" / "worker"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_worker(home: Path, cache: Path) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, MATTEKIT_HOME=str(home), MATTEKIT_CACHE=str(cache))
    process = subprocess.Popen([sys.executable, "-m", "mattekit.inference.worker", "start",
                                "--foreground"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info_path = home / "worker.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info["pid"] == process.pid:
                return process, info
        if process.poll() is not None:
            raise SystemExit(f"worker exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit("worker did not start")


def run_request(client: WorkerClient, job: dict) -> dict:
    events = list(client.stream_process(job))
    final = events[-1]
    if final.get("event") != "done" or final.get("computed"):
        raise SystemExit(f"expected a cache hit, got {final}")
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    shutil.rmtree(WORK, ignore_errors=True)
    home, cache, plates = WORK / "home", WORK / "cache", WORK / "plate"
    plates.mkdir(parents=True)
    config = ocio.load_config()
    frame = camera_move(photo_srgb(), 1, width, height)[0]
    linear = ocio.Converter(config, ocio.ENGINE_SRGB, "ACEScg").apply(frame)
    write_exr(plates / "plate.1001.exr", linear, pixel_type="half", compression="zip")

    process, info = start_worker(home, cache)
    token = (home / "token").read_text().strip()
    try:
        with WorkerClient(info["host"], info["port"], token, client="bench") as client:
            out = Path(client.hello["cache_root"]) / "bench" / "matte.####.exr"
            job = {"node": "video-matte", "plate": str(plates / "plate.####.exr"),
                   "frames": "1001", "out": str(out), "colorspace": "ACEScg"}
            first = list(client.stream_process(job))[-1]
            if first.get("event") != "done":
                raise SystemExit(f"first render failed: {first}")
            for _ in range(5):  # warm both paths before timing
                run_request(client, job)

            kept: list[float] = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                run_request(client, job)
                kept.append(time.perf_counter() - t0)

        fresh: list[float] = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            with WorkerClient(info["host"], info["port"], token, client="bench") as client:
                run_request(client, job)
            fresh.append(time.perf_counter() - t0)

        engine = create_engine("rvm", "auto", {})
        direct_job = RenderJob(node=job["node"], plate=job["plate"], frames=job["frames"],
                               out=job["out"], colorspace=job["colorspace"], cache_root=cache)
        render(direct_job, engine=engine)
        direct: list[float] = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            report = render(direct_job, engine=engine)
            direct.append(time.perf_counter() - t0)
            if report.computed:
                raise SystemExit("expected a cache hit in-process")

        with WorkerClient(info["host"], info["port"], token, client="bench") as client:
            client.call("shutdown")
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; plate {width}x{height} half ZIP, 1 frame, cache hit; "
          f"{args.requests} requests each")
    print("| connection | p50 ms | p99 ms | mean ms | max ms |")
    print("|---|---|---|---|---|")
    for name, times in (("fresh (connect + hello + process)", fresh),
                        ("kept (process only)", kept),
                        ("render() in-process, no worker", direct)):
        ms = [t * 1000 for t in times]
        print(f"| {name} | {percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} | "
              f"{statistics.fmean(ms):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
