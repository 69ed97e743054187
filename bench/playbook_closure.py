"""Benchmark: the file closure of a playbook of about 700 files, read cold.

Writes a synthetic project to a temporary folder: one playbook, ``--roles`` roles
(tasks with includes, templates, files, defaults, vars, meta dependencies on the
previous role, a role library), group_vars, plugin folders beside the playbook and
one collection role. Each sample is a fresh Python process that imports vaultdoit's
playbook reader and computes the closure once (no cache survives between samples;
the files are in the OS page cache, as they are when a build command starts).
Prints the import time and the closure's wall and CPU time, medians of ``--repeat``
samples.
Usage:

    .venv/bin/python bench/playbook_closure.py [--roles 36] [--repeat 7] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5

SAMPLE = """\
import json, sys, time
t0 = time.perf_counter()
from vaultdoit.playbook import playbook_closure
from pathlib import Path
t1, c1 = time.perf_counter(), time.process_time()
closure = playbook_closure(Path(sys.argv[1]), env={"HOME": "/nonexistent"})
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import": t1 - t0, "closure": t2 - t1, "cpu": c2 - c1, "files": len(closure.files),
                  "warnings": len(closure.warnings)}))
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_project(root: Path, roles: int) -> int:
    """The synthetic project; returns the number of files the playbook reads."""
    count = 0
    for index in range(roles):
        role = root / "roles" / f"svc{index}"
        deps = f"  - role: svc{index - 1}\n" if index else ""
        write(role / "meta" / "main.yml", f"galaxy_info: {{author: bench}}\ndependencies:\n{deps or '  []'}\n")
        write(role / "defaults" / "main.yml", "".join(f"svc{index}_opt{n}: {n}\n" for n in range(10)))
        write(role / "vars" / "main.yml", f"svc{index}_user: svc{index}\n")
        tasks = [f"- name: config {n}\n  template:\n    src: conf{n}.j2\n    dest: /etc/svc{index}/conf{n}\n"
                 for n in range(6)]
        tasks.append("- include_tasks: install.yml\n- import_tasks: service.yml\n")
        tasks.append(f"- copy: {{src: static/, dest: /opt/svc{index}/}}\n")
        tasks.append("- template: {src: '{{ item }}.j2', dest: /etc/x}\n  loop: [conf0, conf1]\n")
        write(role / "tasks" / "main.yml", "".join(tasks))
        write(role / "tasks" / "install.yml", f"- package: {{name: svc{index}}}\n- include_tasks: checks.yml\n")
        write(role / "tasks" / "checks.yml", "- command: /bin/true\n  changed_when: false\n")
        write(role / "tasks" / "service.yml", "- service: {name: svc, state: started}\n")
        write(role / "handlers" / "main.yml", "- name: restart\n  service: {name: svc, state: restarted}\n")
        for n in range(6):
            write(role / "templates" / f"conf{n}.j2", f"# svc{index} conf{n}\nvalue={{{{ svc{index}_opt{n} }}}}\n")
        for n in range(4):
            write(role / "files" / "static" / f"asset{n}.txt", f"asset {n}\n")
        write(role / "library" / f"svc{index}_mod.py", "# a module\n")
        count += 3 + 4 + 1 + 6 + 4 + 1  # meta, defaults, vars; 4 task files; handlers; templates; files; library
    plays = "".join(f"    - svc{index}\n" for index in range(roles))
    write(root / "site.yml", f"- hosts: all\n  roles:\n{plays}    - bench.kit.extra\n"
                             "  tasks:\n    - include_role: {name: svc0, tasks_from: install}\n")
    write(root / "group_vars" / "all.yml", "common: 1\n")
    write(root / "filter_plugins" / "filters.py", "# filters\n")
    coll = root / "collections" / "ansible_collections" / "bench" / "kit"
    write(coll / "galaxy.yml", "namespace: bench\nname: kit\nversion: 1.0.0\n")
    write(coll / "roles" / "extra" / "tasks" / "main.yml", "- debug: msg=extra\n")
    write(coll / "plugins" / "modules" / "kit.py", "# a module\n")
    return count + 6


def sample(playbook: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", SAMPLE, str(playbook)], check=True, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", type=int, default=36)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic project")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vaultdoit-closure-"))
    try:
        expected = make_project(root, args.roles)
        samples = [sample(root / "site.yml") for _ in range(args.repeat)]
        files = {int(s["files"]) for s in samples}
        if files != {expected}:
            print(f"FAIL: closure has {files} files, expected {expected}")
            return 1
        imports = statistics.median(s["import"] for s in samples)
        closures = [s["closure"] for s in samples]
        median = statistics.median(closures)
        print(f"closure of {expected} files ({args.roles} roles), {args.repeat} fresh processes")
        print(f"  import vaultdoit.playbook: median {imports:.3f} s")
        print(f"  closure, cold:             median {median:.3f} s, min {min(closures):.3f}, max {max(closures):.3f}")
        print(f"  samples: {' '.join(f'{c:.3f}' for c in closures)}")
        print(f"  closure, CPU time:         median {statistics.median(s['cpu'] for s in samples):.3f} s "
              "(less sensitive to other load on the machine)")
        verdict = "PASS" if median < TARGET_SECONDS else "FAIL"
        print(f"{verdict}: target under {TARGET_SECONDS} s")
        return 0 if verdict == "PASS" else 1
    finally:
        if args.keep:
            print(f"project kept in {root}")
        else:
            shutil.rmtree(root)


if __name__ == "__main__":
    sys.exit(main())
