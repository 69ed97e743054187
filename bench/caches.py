#!/usr/bin/env python3
"""Cold vs warm caches, side by side in one run on a copy of the project:
the base bootstrap through the APT proxy (bytes fetched upstream, time) and
the wheelhouse (bytes downloaded, time).

    .venv/bin/python bench/caches.py [--keep DIR]

Needs root (mmdebstrap) and the tools scripts/setup installs; about 4 minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import copy_project

BIN = Path(sys.executable).parent


def doit(root: Path, *args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "doit"), *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - start


def apt_record(root: Path) -> dict[str, int]:
    return json.loads((root / "build/mini/.vaultdoit/stages/base.json").read_text())["apt"]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--port", type=int, default=3162, help="port of this run's own apt-cacher-ng")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vaultdoit-bench-caches-"))
    root = copy_project(work / "project", args.port)
    rows = []
    try:
        for label in ("cold", "warm"):
            if label == "warm":
                shutil.rmtree(root / "build/mini/stages/base")
                shutil.rmtree(root / "cache/wheels")
                # The wheelhouse is the cache: warm means present. Put it back from the cold run.
                shutil.copytree(work / "wheels-cold", root / "cache/wheels")
            seconds = doit(root, "stage:base")
            apt = apt_record(root)
            wheels_s = doit(root, "cache:wheels")
            if label == "cold":
                shutil.copytree(root / "cache/wheels", work / "wheels-cold")
            rows.append((label, seconds, apt, wheels_s, folder_bytes(root / "cache/wheels")))
    finally:
        subprocess.run([str(BIN / "vaultdoit"), "-C", str(root), "cache", "stop"], check=False)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'run':<6} {'base s':>8} {'apt upstream MiB':>17} {'apt served MiB':>15} {'.deb upstream':>14} "
          f"{'wheels s':>9}")
    for label, seconds, apt, wheels_s, _ in rows:
        print(f"{label:<6} {seconds:8.1f} {apt['upstream_bytes'] / 2**20:17.1f} {apt['served_bytes'] / 2**20:15.1f} "
              f"{apt['upstream_debs']:14d} {wheels_s:9.2f}")
    cold, warm = rows
    print(f"\nwarm/cold base bootstrap time: {warm[1] / cold[1]:.2f}; "
          f"upstream bytes warm/cold: {warm[2]['upstream_bytes'] / max(cold[2]['upstream_bytes'], 1):.3f}")


if __name__ == "__main__":
    main()
