"""What writing an alert's clip costs the lane thread (docs/edge.md, "Clips"): the lane's own
H.264 writer (`pipeline/edge/clips.py` `write_mp4`, the encoder settings `reid edge` uses) on the
frames a 4-second pass keeps at 15 fps (2 s before it, 0.5 s after: 98 frames), made from a sample
photo moving across a lane-sized frame and kept as JPEG at the ring's quality, as the lane keeps them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_clips.py [--sizes 640x480,1280x720]
        [--seconds 6.5] [--fps 15] [--repeats 5]

Prints per frame size: the clip's wall time (median and max of --repeats), its CPU time (the
encoder's own threads included), per frame, and the file's size; with the load average, since the
writer runs in the lane thread and a busy box stretches it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from retail_reid.images import read_image
from retail_reid.pipeline.edge.clips import write_mp4

PHOTO = Path(__file__).resolve().parent.parent / "sample" / "grocery" / "val" / "Banana"
JPEG_QUALITY = 70  # the ring's (docs/edge.md)


def frames_of(width: int, height: int, n: int, fps: float) -> list[tuple[float, bytes]]:
    """n JPEG frames: a grey lane with a photo of a product crossing it from left to right."""
    photo = read_image(sorted(PHOTO.glob("*.jpg"))[0])
    side = height // 4
    item = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(n):
        frame = np.full((height, width, 3), 90, np.uint8)
        x = int((width - side) * i / max(n - 1, 1))
        y = (height - side) // 2
        frame[y : y + side, x : x + side] = item
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        out.append((i / fps, data.tobytes()))
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x480,1280x720")
    ap.add_argument("--seconds", type=float, default=6.5, help="clip length (2 s before + a 4 s pass + 0.5 s)")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"load average at start {os.getloadavg()[0]:.2f}; OMP_NUM_THREADS={threads}")
    header = ("frames", "n", "wall median", "wall max", "CPU", "per frame", "size")
    print(" ".join(f"{h:>{w}s}" for h, w in zip(header, (10, 4, 12, 9, 8, 10, 8), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            frames = frames_of(width, height, round(a.seconds * a.fps) + 1, a.fps)
            path = Path(tmp) / f"clip-{size}.mp4"
            walls, cpus = [], []
            for _ in range(a.repeats):
                t, c = time.perf_counter(), cpu_seconds()
                write_mp4(path, frames, a.fps)
                walls.append(time.perf_counter() - t)
                cpus.append(cpu_seconds() - c)
            wall = statistics.median(walls)
            print(
                f"{size:>10s} {len(frames):4d} {wall * 1000:10.0f} ms {max(walls) * 1000:6.0f} ms "
                f"{statistics.median(cpus) * 1000:5.0f} ms {wall / len(frames) * 1000:7.1f} ms "
                f"{path.stat().st_size / 1000:5.0f} KB"
            )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
