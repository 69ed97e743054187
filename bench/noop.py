"""Benchmark: what a no-op `doit final_image` costs, side by side with a bare doit.

Two projects, each measured in alternation with a bare doit (a one-task dodo.py
that is up to date), so that load on the machine hits both alike:

1. a built project given with ``--project`` (e.g. a clone of this repository after
   `doit final_image`): the no-op run's median against bare doit's (target: within
   1.5x);
2. a synthetic project whose one stage's playbook reads about 700 files (see
   bench/playbook_closure.py), built with the fake packer of tests/fakes (the images
   are real qcow2 files): the warm no-op (target: under 0.3 s) and the cold load, with
   the kept plan removed (target: under 2 s).

Usage:

    .venv/bin/python bench/noop.py --project /path/to/built/clone [--repeat 15]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from playbook_closure import make_project  # noqa: E402

DOIT = str(Path(sys.executable).parent / "doit")
BARE = 'def task_hello():\n    return {"actions": ["true"], "file_dep": ["dodo.py"]}\n'
TEMPLATE = """
source "qemu" "big" {
  disk_image       = true
  iso_url          = "images/root.qcow2"
  iso_checksum     = "none"
  format           = "qcow2"
  output_directory = "build/big"
  vm_name          = "big.qcow2"
}
build {
  sources = ["source.qemu.big"]
  provisioner "ansible" {
    playbook_file = "ansible/site.yml"
    use_proxy     = false
  }
}
"""


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def side_by_side(bare: Path, project: Path, env: dict[str, str], repeat: int) -> tuple[float, float]:
    """Medians of bare doit and of the project's `doit final_image`, run in alternation."""
    plain = {k: v for k, v in os.environ.items()}
    ours, base = [], []
    for _ in range(repeat):
        base.append(timed([DOIT], bare, plain))
        ours.append(timed([DOIT, "final_image"], project, env))
    return statistics.median(base), statistics.median(ours)


def warm(project: Path, env: dict[str, str]) -> None:
    """Bring the project to a no-op state with its plan kept (a plan made right after files were
    written is not kept: wait that out)."""
    subprocess.run([DOIT, "final_image"], cwd=project, env=env, check=True, capture_output=True)
    time.sleep(2.5)
    subprocess.run([DOIT, "final_image"], cwd=project, env=env, check=True, capture_output=True)
    out = subprocess.run([DOIT, "--reporter=json", "final_image"], cwd=project, env=env, check=True,
                         capture_output=True, text=True).stdout
    ran = [t["name"] for t in json.loads(out)["tasks"] if t["result"] == "success"]
    if ran:
        raise SystemExit(f"{project} is not a no-op: {ran} ran")


def synthetic(root: Path, roles: int) -> tuple[Path, dict[str, str], int]:
    from conftest import fake_packer_env

    files = make_project(root / "ansible", roles)
    (root / "packer").mkdir()
    (root / "packer" / "big.pkr.hcl").write_text(TEMPLATE)
    (root / "images").mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root / "images/root.qcow2"), "16M"], check=True)
    shutil.copy(REPO / "tests/fixtures/projects/team/dodo.py", root / "dodo.py")
    env = {**os.environ, **fake_packer_env(root, root.parent / "fake")}
    return root, env, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a built project (no-op ratio against bare doit)")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--roles", type=int, default=36)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vaultdoit-noop-"))
    verdicts = []
    try:
        bare = work / "bare"
        bare.mkdir()
        (bare / "dodo.py").write_text(BARE)
        subprocess.run([DOIT], cwd=bare, check=True, capture_output=True)
        if args.project is not None:
            env = dict(os.environ)
            warm(args.project, env)
            base, ours = side_by_side(bare, args.project, env, args.repeat)
            ratio = ours / base
            print(f"{args.project}: no-op doit final_image median {ours:.3f} s, bare doit {base:.3f} s: "
                  f"{ratio:.2f}x ({args.repeat} runs each, alternating)")
            verdicts.append(("no-op within 1.5x of bare doit", ratio <= 1.5))
        root, env, files = synthetic(work / "big", args.roles)
        warm(root, env)
        base, ours = side_by_side(bare, root, env, args.repeat)
        print(f"synthetic project, {files} playbook files: no-op median {ours:.3f} s, bare doit {base:.3f} s: "
              f"{ours / base:.2f}x")
        verdicts.append(("700-file no-op under 0.3 s", ours < 0.3))
        cold = []
        for _ in range(max(3, args.repeat // 3)):
            shutil.rmtree(root / "build" / ".vaultdoit-plans", ignore_errors=True)
            cold.append(timed([DOIT, "final_image"], root, env))
        print(f"  cold load (no kept plan): median {statistics.median(cold):.3f} s over {len(cold)} runs")
        verdicts.append(("700-file cold load under 2 s", statistics.median(cold) < 2.0))
        for name, ok in verdicts:
            print(f"{'PASS' if ok else 'FAIL'}: {name}")
        return 0 if all(ok for _, ok in verdicts) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
