#!/usr/bin/env python3
"""Final-image compression: the plain `qemu-img convert -O qcow2 -c` (zlib, one
writer) against vaultdoit's default (zstd, -W, -m 8), side by side on the same
stage chain, plus zlib with -W for reference.

    .venv/bin/python bench/compression.py [--top build/mini/stages/demo/final/final.qcow2] [--repeat 3]

Prints median time and size of each, and the ratios against the plain command.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

VARIANTS = {
    "plain -c (zlib)": ["-c"],
    "zlib -W -m 8": ["-c", "-W", "-m", "8"],
    "zstd -W -m 8 (default)": ["-c", "-o", "compression_type=zstd", "-W", "-m", "8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=Path, default=REPO / "build/mini/stages/demo/final/final.qcow2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.top.is_file():
        raise SystemExit(f"{args.top} not found: build the mini profile first (doit final_image)")
    results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in VARIANTS}
    with tempfile.TemporaryDirectory(dir=args.top.parent.parent) as tmp:
        for _ in range(args.repeat):
            for name, opts in VARIANTS.items():  # interleaved: noise hits every variant alike
                out = Path(tmp) / "out.qcow2"
                out.unlink(missing_ok=True)
                start = time.monotonic()
                subprocess.run(["qemu-img", "convert", "-O", "qcow2", *opts, str(args.top), str(out)], check=True)
                times, _ = results[name]
                times.append(time.monotonic() - start)
                results[name] = (times, out.stat().st_size)
    base_time = statistics.median(results["plain -c (zlib)"][0])
    base_size = results["plain -c (zlib)"][1]
    print(f"chain top: {args.top}  (repeats: {args.repeat}, medians)")
    print(f"{'variant':<24} {'time s':>8} {'MiB':>8} {'speed-up':>9} {'size ratio':>11}")
    for name, (times, size) in results.items():
        median = statistics.median(times)
        print(f"{name:<24} {median:8.2f} {size / 2**20:8.1f} {base_time / median:8.2f}x {size / base_size:10.3f}")


if __name__ == "__main__":
    main()
