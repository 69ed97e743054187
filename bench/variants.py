#!/usr/bin/env python3
"""Two variant finals one after the other vs side by side (`doit -n 2`), and the guard's wait.

    .venv/bin/python bench/variants.py [--keep DIR | --reuse DIR] [--rounds 1]

On a copy of the project (or a built one, --reuse), after one full build: a
change that only the final stage reads (the monitoring script) makes both
variants' final stages and final images rebuild. Each round measures that
rebuild with `doit final_image` (sequential) and with `doit -n 2 final_image`
(side by side), in alternating order so the machine's noise hits both alike.
Then once more side by side with each VM asking for every core of the host
(`cpus` = the host's cores): the guard lets one run at a time, and the other's
wait is read from its stage record (`waited_seconds`). Needs root (mmdebstrap)
and the tools scripts/setup installs; about 15 minutes per round under TCG.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import copy_project

DOIT = Path(sys.executable).parent / "doit"
VARIANTS = ("demo", "production")


def run(root: Path, label: str, *args: str) -> float:
    start = time.monotonic()
    # The console reporter names what ran (".  task" lines).
    proc = subprocess.run([str(DOIT), "--reporter=console", *args, "final_image"], cwd=root, capture_output=True,
                          text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: doit failed ({proc.returncode}); see {root}/build/logs\n{proc.stderr[-3000:]}")
    ran = [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]
    print(f"{label:<34} {seconds:8.1f} s   ran: {', '.join(ran) or 'nothing'}", flush=True)
    return seconds


def records(root: Path) -> dict[str, dict]:
    return {v: json.loads((root / f"build/mini/stages/{v}/final/.vaultdoit-stage.json").read_text())
            for v in VARIANTS}


def touch_final(root: Path, n: int) -> None:
    script = root / "ansible/roles/monitoring/files/bin/vault-monitor"
    script.write_text(script.read_text() + f"\n# bench: variants change {n}\n")


def set_cpus(root: Path, cpus: int | None) -> None:
    toml = root / "vault.toml"
    text = re.sub(r"\ncpus = \d+  # bench\n", "\n", toml.read_text())
    if cpus is not None:
        text = text.replace("memory = 1024\n", f"memory = 1024\ncpus = {cpus}  # bench\n", 1)
    toml.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--reuse", type=Path, help="a project already built with these sources")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=3182, help="port of this run's own apt-cacher-ng")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vaultdoit-bench-"))
    root = args.reuse or copy_project(work / "project", args.port)
    cores = len(os.sched_getaffinity(0))
    results: dict[str, list[float]] = {"sequential": [], "side by side": []}
    builds: dict[str, list[float]] = {"sequential": [], "side by side": []}
    try:
        run(root, "full build, -n 2 (not compared)", "-n", "2")
        change = 0
        for round_no in range(args.rounds):
            order = ["sequential", "side by side"] if round_no % 2 == 0 else ["side by side", "sequential"]
            for case in order:
                change += 1
                touch_final(root, change)
                extra = ("-n", "2") if case == "side by side" else ()
                results[case].append(run(root, f"round {round_no + 1}: {case}", *extra))
                builds[case] += [r["build_seconds"] for r in records(root).values()]
        # The guard: each VM asks for every core, so the second final waits for the first.
        set_cpus(root, cores)
        change += 1
        touch_final(root, change)
        guarded = run(root, f"-n 2, cpus = {cores} (guard)", "-n", "2")
        waits = {v: r["waited_seconds"] for v, r in records(root).items()}
        set_cpus(root, None)
        print()
        seq = sum(results["sequential"]) / len(results["sequential"])
        par = sum(results["side by side"]) / len(results["side by side"])
        print(f"host: {cores} cores; mini's VMs: 1024 MiB, {max(1, cores // 2)} CPU(s) each by default")
        print(f"two finals + final images, sequential:   {seq:7.1f} s (mean of {len(results['sequential'])})")
        print(f"two finals + final images, side by side: {par:7.1f} s (mean of {len(results['side by side'])})")
        print(f"speed-up side by side:                   {seq / par:7.2f}x")
        print(f"one final stage's build, sequential:     {sum(builds['sequential']) / len(builds['sequential']):7.1f} s")
        print(f"one final stage's build, side by side:   "
              f"{sum(builds['side by side']) / len(builds['side by side']):7.1f} s")
        print(f"guarded run (cpus = {cores}): {guarded:.1f} s; waited: "
              + ", ".join(f"{v} {w:.1f} s" for v, w in waits.items()))
    finally:
        subprocess.run([str(DOIT.parent / "vaultdoit"), "-C", str(root), "cache", "stop"], check=False)
        if args.keep is None and args.reuse is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
