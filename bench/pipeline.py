#!/usr/bin/env python3
"""Build-time benchmark of the mini profile: full build, no-op, final-stage-only
rebuild and drivers-change rebuild, measured in one run on a copy of the project.

    .venv/bin/python bench/pipeline.py [--keep DIR]

Prints each time and the ratios to the full build. Needs root (mmdebstrap)
and the tools scripts/setup installs. Takes about 20 minutes under TCG.
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

DOIT = Path(sys.executable).parent / "doit"


def run(root: Path, label: str) -> tuple[float, list[str]]:
    start = time.monotonic()
    proc = subprocess.run([str(DOIT), "--reporter=json", "final_image"], cwd=root,
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: doit failed ({proc.returncode}); see {root}/build/logs\n{proc.stderr[-3000:]}")
    ran = [t["name"] for t in json.loads(proc.stdout)["tasks"] if t["result"] == "success"]
    print(f"{label:<22} {seconds:8.1f} s   ran: {', '.join(ran) or 'nothing'}", flush=True)
    return seconds, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--port", type=int, default=3172, help="port of this run's own apt-cacher-ng")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vaultdoit-bench-"))
    root = copy_project(work / "project", args.port)
    try:
        full, _ = run(root, "full build")
        noop, _ = run(root, "no-op")
        script = root / "ansible/roles/monitoring/files/bin/vault-monitor"
        script.write_text(script.read_text() + "\n# bench: monitoring change\n")
        final_only, _ = run(root, "monitoring change")
        defaults = root / "ansible/roles/driver_config/defaults/main.yml"
        defaults.write_text(defaults.read_text().replace('"debug=0"', '"debug=1"'))
        drivers, _ = run(root, "drivers change")
        print()
        print(f"no-op / full:             {noop / full:6.3f}")
        print(f"monitoring change / full: {final_only / full:6.3f}   (target < 0.25)")
        print(f"drivers change / full:    {drivers / full:6.3f}")
    finally:
        subprocess.run([str(DOIT.parent / "vaultdoit"), "-C", str(root), "cache", "stop"], check=False)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
