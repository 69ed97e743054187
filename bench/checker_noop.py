"""Benchmark: doit's up-to-date check on a chain of big stage images.

Compares vaultdoit's BigFileChecker with doit's default ``md5`` checker on the
same images (separate dep DB files), timing whole ``doit`` runs as subprocesses:

  (a) no-op run                                  median of --repeat
  (b) first run after touching every image       one run
  (c) later runs after that touch (no re-touch)  median of --repeat

A control chain of small (64 MiB) images shows whether the no-op time depends
on image size. Usage:

    .venv/bin/python bench/checker_noop.py [--size-gib 2] [--stages 4] [--repeat 5] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaultdoit.checker import ALGO, DigestCache  # noqa: E402

CHECKERS = ("ours", "md5")
CHUNK = 16 * 2**20
CONTROL_BYTES = 64 * 2**20  # = the checker's default threshold, so it takes the cached path

DODO = '''\
"""Benchmark chain: stage:N depends on stage{{N-1}}.img and produces stage{{N}}.img."""
import os
from pathlib import Path

from vaultdoit.checker import make_checker, record_digest

HERE = Path(__file__).resolve().parent
CHECKER = os.environ["BENCH_CHECKER"]
CACHE = HERE / "digests.json"

DOIT_CONFIG = {{
    "backend": "json",
    "dep_file": str(HERE / f"doit-{{CHECKER}}.json"),
    "check_file_uptodate": make_checker(CACHE) if CHECKER == "ours" else "md5",
    "verbosity": 0,
}}


def image(n):
    return HERE / f"stage{{n}}.img"


def task_stage():
    for n in range({stages}):
        dep = HERE / "base.txt" if n == 0 else image(n - 1)

        def build(n=n):
            # The images exist already; record the digest as a real build action does.
            if CHECKER == "ours":
                record_digest(image(n), CACHE)

        yield {{"name": str(n), "actions": [build], "file_dep": [str(dep)], "targets": [str(image(n))]}}
'''


def doit_argv() -> list[str]:
    script = Path(sys.executable).parent / "doit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "doit"]


def make_chain(folder: Path, stages: int, size: int) -> list[Path]:
    """Write `stages` images of `size` random (incompressible) bytes and the dodo."""
    folder.mkdir(parents=True)
    (folder / "base.txt").write_text("base\n")
    (folder / "dodo.py").write_text(DODO.format(stages=stages))
    images = []
    for n in range(stages):
        path = folder / f"stage{n}.img"
        with open(path, "wb") as f:
            left = size
            while left:
                f.write(os.urandom(min(CHUNK, left)))
                left -= min(CHUNK, left)
        images.append(path)
    return images


def run_doit(folder: Path, checker: str, expect_noop: bool) -> float:
    """Time one `doit -f dodo.py` run; check that a no-op run executed nothing."""
    env = {**os.environ, "BENCH_CHECKER": checker,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run([*doit_argv(), "-f", "dodo.py"], cwd=folder, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"doit failed in {folder} ({checker}):\n{proc.stdout}{proc.stderr}")
    ran = [line for line in proc.stdout.splitlines() if line.startswith(".")]
    if expect_noop and ran:
        raise SystemExit(f"expected a no-op run in {folder} ({checker}), but ran: {ran}")
    return elapsed


def touch(images: list[Path]) -> None:
    now = time.time_ns()
    for path in images:
        os.utime(path, ns=(now, now))


def hash_rate(path: Path) -> dict[str, float]:
    """Seconds per GiB for each candidate algorithm (file in page cache)."""
    size = path.stat().st_size
    rates = {}
    for algo in ("md5", "sha256", "blake2b"):
        start = time.perf_counter()
        with open(path, "rb") as f:
            hashlib.file_digest(f, algo)
        rates[algo] = (time.perf_counter() - start) * 2**30 / size
    return rates


def sidecar_write_ms(folder: Path, entries: int = 32, repeat: int = 50) -> float:
    """Median cost of one sidecar update (read, merge, prune, atomic write) with `entries` paths."""
    files = []
    for i in range(entries):
        files.append(folder / f"f{i}")
        files[-1].write_bytes(b"x")
    cache = DigestCache(folder / "digests.json")
    for f in files:
        cache.store(f, f.stat(), f"{ALGO}:" + "0" * 64)
    times = []
    for i in range(repeat):
        f = files[i % entries]
        start = time.perf_counter()
        cache.store(f, f.stat(), f"{ALGO}:" + "1" * 64)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import doit
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"doit {doit.__version__ if isinstance(doit.__version__, str) else '.'.join(map(str, doit.__version__))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=2.0, help="size of each stage image (default 2)")
    ap.add_argument("--stages", type=int, default=4, help="number of stage images (default 4)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per median (default 5)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where to create the work folder (default: the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    size = int(args.size_gib * 2**30)
    need = args.stages * (size + CONTROL_BYTES) + 2**30
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise SystemExit(f"{args.dir}: {free / 2**30:.1f} GiB free, need {need / 2**30:.1f} GiB")
    work = Path(tempfile.mkdtemp(prefix="vaultdoit-bench-", dir=args.dir))
    print(f"machine: {machine()}")
    print(f"work folder: {work}")
    try:
        return bench(work, args.stages, size, args.repeat)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, stages: int, size: int, repeat: int) -> int:
    start = time.perf_counter()
    chains = {"big": work / "big", "control": work / "control"}
    images = {"big": make_chain(chains["big"], stages, size),
              "control": make_chain(chains["control"], stages, CONTROL_BYTES)}
    print(f"wrote {stages} x {size / 2**30:.2f} GiB + {stages} x 64 MiB random images "
          f"in {time.perf_counter() - start:.0f} s")

    rates = hash_rate(images["big"][0])
    print("hash, s/GiB (page cache): " + ", ".join(f"{a} {r:.2f}" for a, r in rates.items()))
    side = work / "sidecar"
    side.mkdir()
    print(f"sidecar update (32 entries): {sidecar_write_ms(side):.2f} ms median")

    t: dict[tuple[str, str, str], float] = {}
    for chain, folder in chains.items():
        for checker in CHECKERS:
            t[chain, checker, "initial"] = run_doit(folder, checker, expect_noop=False)

    samples: dict[tuple[str, str, str], list[float]] = {}

    def sample(case: str) -> None:
        # Interleave checkers and chains so that machine noise hits all alike.
        for _ in range(repeat):
            for chain, folder in chains.items():
                for checker in CHECKERS:
                    samples.setdefault((chain, checker, case), []).append(
                        run_doit(folder, checker, expect_noop=True))

    sample("a")
    for chain, folder in chains.items():
        touch(images[chain])
        for checker in CHECKERS:
            t[chain, checker, "b"] = run_doit(folder, checker, expect_noop=True)
    sample("c")
    for key, values in samples.items():
        t[key] = statistics.median(values)

    cases = [("initial", "initial run (records state, not a target)"),
             ("a", "(a) no-op, median"),
             ("b", "(b) 1st run after touch"),
             ("c", "(c) later runs after touch, median")]
    for chain, label in (("big", f"{stages} x {size / 2**30:.2f} GiB"), ("control", f"{stages} x 64 MiB")):
        print(f"\nchain {label}, seconds per doit run (repeat={repeat})")
        print(f"{'case':<44} {'ours':>8} {'md5':>8} {'md5/ours':>9}")
        for case, text in cases:
            ours, md5 = t[chain, "ours", case], t[chain, "md5", case]
            print(f"{text:<44} {ours:8.3f} {md5:8.3f} {md5 / ours:8.1f}x")
        if chain == "big":
            for case in ("a", "c"):
                print(f"  samples {case}: ours " + " ".join(f"{v:.3f}" for v in samples["big", "ours", case])
                      + " | md5 " + " ".join(f"{v:.3f}" for v in samples["big", "md5", case]))

    noop, noop_small = t["big", "ours", "a"], t["control", "ours", "a"]
    ratio_c = t["big", "md5", "c"] / t["big", "ours", "c"]
    checks = [
        (f"no-op under 0.5 s: {noop:.3f} s", noop < 0.5),
        (f"no-op independent of image size: {noop:.3f} s at {size / 2**30:.2f} GiB vs "
         f"{noop_small:.3f} s at 64 MiB", abs(noop - noop_small) <= max(0.05, 0.25 * noop_small)),
        (f"at least 10x faster than the default checker on the 2nd run after a touch: {ratio_c:.1f}x",
         ratio_c >= 10),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
