#!/usr/bin/env python3
"""A no-op ``doit final_image`` (reporter, summary, plan cache and all) against a bare doit,
side by side in one run: the ``team`` test fixture built once with the fake packer.

    .venv/bin/python bench/noop_run.py [--ref CHECKOUT] [--runs 21]

With ``--ref`` a second copy of the fixture runs with another checkout of vaultdoit
(say the main branch) on ``PYTHONPATH``, interleaved with this one: what a change to the
no-op path costs. Wall-clock medians of interleaved runs (the machines are shared and
noisy); bytecode is compiled first. bench/noop.py measures a built mini project against
the 1.5x target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOIT = str(Path(sys.executable).parent / "doit")
BARE = 'def task_one():\n    return {"actions": ["true"], "file_dep": ["dodo.py"]}\n'


def fake_env(root: Path, checkout: Path, work: Path) -> dict[str, str]:
    """The fake packer (tests/fakes) for the fixture at ``root``, planned by ``checkout``."""
    plan = subprocess.run([sys.executable, "-c", (
        "import json, sys; from pathlib import Path; from vaultdoit.plan import load_project\n"
        "p = load_project(Path(sys.argv[1]))\n"
        "print(json.dumps({s.name: {'output': str(s.output), 'parent': str(p.parent(s).output) if s.parent "
        "else None} for s in p.stages}))"), str(root)],
        env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True, check=True).stdout
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(plan)
    return {**os.environ, "PYTHONPATH": str(checkout),
            "PATH": f"{REPO / 'tests/fakes'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_PACKER_PLAN": str(work / "plan.json"), "FAKE_PACKER_LOG": str(work / "packer.log")}


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, help="another checkout of vaultdoit to compare with")
    parser.add_argument("--runs", type=int, default=21)
    opts = parser.parse_args()
    checkouts = {"this": REPO, **({"ref": opts.ref.resolve()} if opts.ref else {})}
    with tempfile.TemporaryDirectory(prefix="vaultdoit-noop-") as tmp:
        work = Path(tmp)
        bare = work / "bare"
        bare.mkdir()
        (bare / "dodo.py").write_text(BARE)
        plain = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
        cases: dict[str, tuple[list[str], Path, dict[str, str]]] = {"bare doit": ([DOIT], bare, plain)}
        for name, checkout in checkouts.items():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "vaultdoit")], check=True)
            root = work / name
            shutil.copytree(REPO / "tests/fixtures/projects/team", root)
            env = {k: v for k, v in fake_env(root, checkout, work / f"{name}-fake").items()
                   if k != "PYTHONDONTWRITEBYTECODE"}
            subprocess.run([DOIT, "final_image"], cwd=root, env=env, capture_output=True, check=True)
            time.sleep(3)  # past the plan cache's racy window: the next run keeps the plan
            timed([DOIT, "final_image"], root, env)
            cases[f"no-op ({name})"] = ([DOIT, "final_image"], root, env)
        timed([DOIT], bare, plain)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.runs):
            for name, (args, cwd, env) in cases.items():
                samples[name].append(timed(args, cwd, env))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"{name:<16} {value * 1000:7.1f} ms  ({value / medians['bare doit']:.2f}x bare doit)")
    print(json.dumps({name: round(v * 1000, 1) for name, v in medians.items()}))


if __name__ == "__main__":
    main()
