#!/usr/bin/env python3
"""Loading a profile's Packer templates (``vaultdoit.hcl.load_packer_dir``): import,
first load and warm loads, in CPU time (the machines are shared and noisy).

    .venv/bin/python bench/template_load.py [--folder packer/mini] [--ref CHECKOUT] [--rounds 5]

With ``--ref`` the same measurement runs against another checkout of vaultdoit
(say the main branch) in alternating subprocesses, and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys, time
start = time.process_time()
from pathlib import Path
from vaultdoit import hcl
imported = time.process_time()
root, folder, warm = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
hcl.load_packer_dir(folder, cwd=root)
first = time.process_time()
for _ in range(warm):
    hcl.load_packer_dir(folder, cwd=root)
done = time.process_time()
print(json.dumps({"import": imported - start, "first": first - imported, "warm": (done - first) / warm}))
"""


def measure(checkout: Path, folder: Path, warm: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO), str(folder), str(warm)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=REPO / "packer" / "mini")
    parser.add_argument("--ref", type=Path, help="another checkout of vaultdoit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20, help="warm loads per round")
    args = parser.parse_args()
    checkouts = {"this": REPO, **({"ref": args.ref.resolve()} if args.ref else {})}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():  # alternate, so load changes hit both alike
            results[name].append(measure(checkout, args.folder.resolve(), args.warm))
    for name in checkouts:
        medians = {k: statistics.median(r[k] for r in results[name]) * 1000 for k in ("import", "first", "warm")}
        print(f"{name:5} import {medians['import']:6.1f} ms   first load {medians['first']:6.1f} ms   "
              f"warm load {medians['warm']:6.1f} ms   ({checkouts[name]})")
    if args.ref:
        for key in ("import", "first", "warm"):
            ratio = statistics.median(r[key] for r in results["this"]) / statistics.median(r[key] for r in results["ref"])
            print(f"{key:6} this/ref = {ratio:.2f}")


if __name__ == "__main__":
    main()
