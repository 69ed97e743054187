#!/usr/bin/env python3
"""Shared stage cache benchmark: loopback push/pull of a big overlay, and a fresh clone of
the mini profile with a warm registry against a full local build, side by side in one run.

    .venv/bin/python bench/team_cache.py [--size-gib 2] [--loopback-only] [--keep DIR]

1. A qcow2 overlay holding SIZE GiB of random data is pushed to a docker-registry
   on 127.0.0.1 and pulled back, each in a process of its own: throughput and peak
   resident memory (target: under 300 MB for 2 GiB).
2. Clone A builds the mini profile from scratch (no remote cache) and pushes its
   stages; clone B, at another path with A's keys (VAULTDOIT_BUILD_KEY and
   VAULTDOIT_ACCESS_KEY), runs `doit final_image` with the registry
   (target: at most 0.2 of A's build).

Needs root (mmdebstrap), docker-registry and the tools scripts/setup installs;
part 2 takes about as long as bench/pipeline.py's full build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, copy_project

sys.path.insert(0, str(REPO / "tests"))
from registry import LocalRegistry  # noqa: E402  (the tests' registry helper)

BIN = Path(sys.executable).parent
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

TRANSFER = """
import json, sys, time
from pathlib import Path
from vaultdoit import remote
from vaultdoit.buildspec import RemoteCache, StageBuild
from vaultdoit.model import Stage

verb, path, repository, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
stage = Stage(name="big", kind="packer", output=path, parent=None, inputs=(), settings={})
build = StageBuild(stage=stage, ancestors=(), root=work, state_dir=work / "state", logfile=work / "log",
                   digests=work / "digests.json")
record = json.loads(sys.argv[5])
registry = remote.Registry(repository)
start = time.monotonic()
if verb == "push":
    result = remote.push_stage(registry, RemoteCache(repository, chunk_size=256 * 2**20), build, record)
else:
    result = remote.pull_stage(registry, build, record)
print(json.dumps({"seconds": time.monotonic() - start, "bytes": result.moved, "layers": result.layers,
                  # VmHWM: this program's peak resident memory (ru_maxrss would keep the parent's)
                  "peak_kib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))}))
"""


def transfer(verb: str, image: Path, repository: str, work: Path, record: dict[str, object]) -> dict[str, float]:
    proc = subprocess.run([str(BIN / "python"), "-c", TRANSFER, verb, str(image), repository, str(work),
                           json.dumps(record)], capture_output=True, text=True, env=CHILD_ENV)
    if proc.returncode != 0:
        sys.exit(f"{verb} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout))


def random_overlay(path: Path, size: int) -> str:
    """A qcow2 image holding ``size`` bytes of random data; returns its sha256."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as fh:
        for _ in range(size // (16 * 2**20)):
            fh.write(os.urandom(16 * 2**20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    from vaultdoit import checker

    return checker.hash_file(path)[0]


def loopback(work: Path, registry: LocalRegistry, size: int) -> None:
    image = work / "push" / "big.qcow2"
    image.parent.mkdir(parents=True)
    digest = random_overlay(image, size)
    record = {"key": "b" * 64, "image_sha256": digest, "parent_image_sha256": None, "tools": {}}
    pushed = transfer("push", image, registry.repository("bench/big"), work / "push", record)
    (work / "pull").mkdir()
    pulled = transfer("pull", work / "pull" / "big.qcow2", registry.repository("bench/big"), work / "pull", record)
    mib = pushed["bytes"] / 2**20
    print(f"overlay: {mib:.0f} MiB of random data in qcow2, {int(pushed['layers'])} layers of at most 256 MiB")
    print(f"push  {pushed['seconds']:7.1f} s  {mib / pushed['seconds']:6.0f} MiB/s   "
          f"peak RSS {pushed['peak_kib'] / 1024:5.0f} MiB   (target < 300 MB)")
    print(f"pull  {pulled['seconds']:7.1f} s  {pulled['bytes'] / 2**20 / pulled['seconds']:6.0f} MiB/s   "
          f"peak RSS {pulled['peak_kib'] / 1024:5.0f} MiB   (verified, written, checked with qemu-img)", flush=True)
    shutil.rmtree(work / "push")
    shutil.rmtree(work / "pull")


def doit(root: Path, label: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "doit"), "--reporter=json", "final_image"], cwd=root, capture_output=True,
                          text=True, env={**CHILD_ENV, **env})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: doit failed ({proc.returncode}); see {root}/build/logs\n{proc.stderr[-3000:]}")
    tasks = json.loads(proc.stdout)["tasks"]
    ran = [t["name"] for t in tasks if t["result"] == "success"]
    pulled = (proc.stderr + "".join(t.get("err", "") for t in tasks)).count(": pulled from ")
    print(f"{label:<32} {seconds:8.1f} s   ran: {', '.join(ran) or 'nothing'}"
          + (f" ({pulled} stages pulled)" if pulled else ""), flush=True)
    return seconds


def mini(work: Path, registry: LocalRegistry) -> None:
    repository = registry.repository("bench/mini")
    a = copy_project(work / "a" / "project", apt_proxy_port=3173)
    b = copy_project(work / "elsewhere" / "b" / "project", apt_proxy_port=3174)
    try:
        full = doit(a, "A: full local build", {"VAULTDOIT_REMOTE_CACHE": "off"})
        start = time.monotonic()
        subprocess.run([str(BIN / "vaultdoit"), "-C", str(a), "cache", "push"], check=True, env={
            **CHILD_ENV, "VAULTDOIT_REMOTE_CACHE": repository})
        push = time.monotonic() - start
        print(f"{'A: vaultdoit cache push':<32} {push:8.1f} s", flush=True)
        keys = a / "build/keys"
        shared = {"VAULTDOIT_REMOTE_CACHE": repository, "VAULTDOIT_BUILD_KEY": str(keys / "build_ed25519"),
                  "VAULTDOIT_ACCESS_KEY": str(keys / "access_ed25519")}
        clone = doit(b, "B: fresh clone, warm registry", shared)
        print()
        print(f"fresh clone with a warm registry / full local build: {clone / full:6.3f}   (target <= 0.2)")
    finally:
        for root in (a, b):
            subprocess.run([str(BIN / "vaultdoit"), "-C", str(root), "cache", "stop"], check=False,
                           capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="size of the random overlay (default 2)")
    parser.add_argument("--loopback-only", action="store_true", help="skip the mini builds")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vaultdoit-team-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "registry").mkdir(exist_ok=True)
    registry = LocalRegistry(work / "registry")
    registry.start()
    try:
        loopback(work, registry, int(args.size_gib * 2**30))
        if not args.loopback_only:
            print()
            mini(work, registry)
    finally:
        registry.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
