"""Load benchmark: 4 clients x 50 requests against one real worker with the RVM engine.

    .venv/bin/python benchmarks/bench_load.py [--clients 4] [--requests 50] [--size 320x180]

Starts a real worker (`python -m mattekit.inference.worker start --foreground`, private home and
cache under benchmarks/_work/load/). Every client is a thread with its own connection and its
own plate sequence; each request renders one frame the cache has not seen (engine `rvm`,
`warmup_frames` 0, so a request is one network pass, a cache write and a hard link), so every
request computes. A warm-up round (10 requests per client, other frames) comes first and is not
timed. Reported: throughput, p50/p99 latency from the client's side (send to `done`; with one
render at a time, a request waits for the others' frames), errors (must be 0), and the worker's
resident memory (RSS, from /proc): at start, after the warm-up, at each quarter of the load and
at the end. "Flat" means the RSS after the load is within 16 MiB of the RSS after warm-up.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mattekit import ocio
from mattekit.inference.demo import camera_move, photo_srgb
from mattekit.inference.exrio import write_exr
from mattekit.inference.worker.client import WorkerClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_worker import percentile, start_worker  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work" / "load"
WARMUP_REQUESTS = 10
FLAT_MIB = 16.0


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def write_plates(folder: Path, clients: int, frames: int, width: int, height: int) -> list[str]:
    """One scene-linear EXR sequence per client, every frame different (a camera move)."""
    config = ocio.load_config()
    to_linear = ocio.Converter(config, ocio.ENGINE_SRGB, "ACEScg")
    clip = camera_move(photo_srgb(), frames, width, height)
    patterns = []
    for client in range(clients):
        seq = folder / f"client{client}"
        seq.mkdir(parents=True)
        for index, frame in enumerate(clip):
            shifted = np.roll(frame, 7 * client, axis=1)  # distinct content per client
            write_exr(seq / f"plate.{index + 1:04d}.exr", to_linear.apply(shifted),
                      pixel_type="half", compression="zip")
        patterns.append(str(seq / "plate.####.exr"))
    return patterns


def job_for(pattern: str, frame: int) -> dict:
    return {"node": "video-matte", "engine": "rvm", "plate": pattern, "frames": str(frame),
            "colorspace": "ACEScg", "params": {"warmup_frames": 0}}


def run_client(info: dict, token: str, pattern: str, frames: range, latencies: list[float],
               errors: list[str], done: list[int]) -> None:
    with WorkerClient(info["host"], info["port"], token, client="bench-load",
                      timeout=600) as client:
        for frame in frames:
            t0 = time.perf_counter()
            final = list(client.stream_process(job_for(pattern, frame)))[-1]
            latencies.append(time.perf_counter() - t0)
            if final.get("event") != "done" or final.get("computed") != [frame]:
                errors.append(f"{pattern} frame {frame}: {final}")
            done.append(frame)


def load(info: dict, token: str, patterns: list[str], frames: range, pid: int,
         samples: list[tuple[int, float]]) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    done: list[int] = []
    threads = [threading.Thread(target=run_client, args=(info, token, p, frames, latencies,
                                                         errors, done)) for p in patterns]
    total = len(patterns) * len(frames)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    next_quarter = 1
    while any(t.is_alive() for t in threads):
        if len(done) >= next_quarter * total / 4 and next_quarter < 4:
            samples.append((len(done), rss_mib(pid)))
            next_quarter += 1
        time.sleep(0.02)
    wall = time.perf_counter() - started
    for thread in threads:
        thread.join()
    return latencies, errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--size", default="320x180")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    shutil.rmtree(WORK, ignore_errors=True)
    home, cache = WORK / "home", WORK / "cache"
    patterns = write_plates(WORK / "plates", args.clients, WARMUP_REQUESTS + args.requests,
                            width, height)
    process, info = start_worker(home, cache)
    token = (home / "token").read_text().strip()
    try:
        rss_start = rss_mib(process.pid)
        warm_errors = load(info, token, patterns, range(1, WARMUP_REQUESTS + 1), process.pid,
                           [])[1]
        rss_warm = rss_mib(process.pid)
        samples: list[tuple[int, float]] = []
        measured = range(WARMUP_REQUESTS + 1, WARMUP_REQUESTS + args.requests + 1)
        latencies, errors, wall = load(info, token, patterns, measured, process.pid, samples)
        rss_end = rss_mib(process.pid)
        with WorkerClient(info["host"], info["port"], token, client="bench-load") as client:
            client.call("shutdown")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    requests = len(latencies)
    ms = [t * 1000 for t in latencies]
    growth = rss_end - rss_warm
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; worker with engine rvm on the CPU; plates {width}x"
          f"{height} half ZIP; {args.clients} clients x {args.requests} requests, 1 new frame "
          f"each (after {WARMUP_REQUESTS} warm-up requests per client)")
    print("| requests | errors | wall s | requests/s | p50 ms | p99 ms | mean ms | RSS start MiB "
          "| RSS after warm-up MiB | RSS after load MiB | growth after warm-up MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {requests} | {len(errors) + len(warm_errors)} | {wall:.1f} | {requests / wall:.1f} "
          f"| {percentile(ms, 50):.0f} | {percentile(ms, 99):.0f} | {statistics.fmean(ms):.0f} "
          f"| {rss_start:.0f} | {rss_warm:.0f} | {rss_end:.0f} | {growth:+.1f} |")
    print("RSS during the load (requests done: MiB): "
          + ", ".join(f"{count}: {mib:.0f}" for count, mib in samples) + f", {requests}: "
          f"{rss_end:.0f}")
    flat = abs(growth) <= FLAT_MIB
    print(f"memory flat after warm-up (|growth| <= {FLAT_MIB:g} MiB): {'yes' if flat else 'NO'}")
    for error in (warm_errors + errors)[:5]:
        print("error:", error)
    if errors or warm_errors or not flat:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
