"""Tests for vaultdoit.yamlio: line numbers, and bounded work on hostile input.

Each hostile file must fail with one PlaybookError line within 2 s and under 300 MB:
the limits are checked in a fresh Python process, whose peak memory is measurable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vaultdoit import yamlio
from vaultdoit.errors import PlaybookError
from vaultdoit.playbook import playbook_closure
from vaultdoit.yamlio import MAX_BYTES, MAX_DEPTH, MAX_EXPANDED, MAX_NODES, line_of, load_yaml

FIXTURES = (Path(__file__).parent / "fixtures" / "ansible").absolute()
REPO = Path(__file__).resolve().parent.parent

# Ten levels of ten aliases each: 10^10 nodes once expanded, from about 600 bytes.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcdefghij", "bcdefghijk"))

MEASURE = """\
import json, resource, sys, time
from pathlib import Path
from vaultdoit.errors import PlaybookError
from vaultdoit.yamlio import load_yaml
start = time.perf_counter()
try:
    load_yaml(Path(sys.argv[1]))
    error = None
except PlaybookError as exc:
    error = str(exc)
seconds = time.perf_counter() - start
print(json.dumps({"error": error, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measured_load(path: Path) -> dict[str, Any]:
    """Load ``path`` in a fresh process: its error line, wall time and peak memory."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True,
                         text=True, env=env, timeout=60).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def hostile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "make", "message"), [
    ("big.yml", lambda: "key: " + "x" * (MAX_BYTES + 1) + "\n", "YAML file larger than 2 MiB"),
    ("bomb.yml", lambda: BOMB, f"YAML aliases expand to more than {MAX_EXPANDED} nodes at line "),
    ("recursive.yml", lambda: "a: &a [1, *a]\n", "a YAML alias refers to a node that contains it at line 1"),
    ("deep_flow.yml", lambda: "[" * 150 + "]" * 150, f"YAML nested deeper than {MAX_DEPTH} levels at line 1"),
    ("deeper_flow.yml", lambda: "[" * 5000 + "]" * 5000, f"YAML nested deeper than {MAX_DEPTH} levels at line 1"),
    ("deep_block.yml", lambda: "".join("  " * i + f"k{i}:\n" for i in range(150)),
     f"YAML nested deeper than {MAX_DEPTH} levels at line {MAX_DEPTH}"),
    ("deep_big_block.yml", lambda: "".join("  " * i + f"k{i}:\n" for i in range(500)),  # over 128 KiB
     f"YAML nested deeper than {MAX_DEPTH} levels at line {MAX_DEPTH + 1}"),
    ("many_nodes.yml", lambda: "[" + "1," * (MAX_BYTES // 2 - 8) + "1]\n", f"more than {MAX_NODES} YAML nodes"),
])
def test_hostile_yaml_fails_fast_in_one_line(tmp_path: Path, name: str, make: object, message: str) -> None:
    path = hostile(tmp_path, name, make())  # type: ignore[operator]
    result = measured_load(path)
    error = str(result["error"])
    assert error.startswith(f"{path}: {message}"), error
    assert "(fix: " in error
    assert "\n" not in error
    assert float(result["seconds"]) < 2.0, result  # bounded work, not a race: the limit is 10x the typical time
    assert float(result["peak_mb"]) < 300, result


def test_the_bomb_is_small() -> None:
    assert len(BOMB) <= 600


def test_a_bomb_in_a_playbook_stops_the_closure(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  vars:\n" + "".join(
        "    " + line + "\n" for line in BOMB.splitlines()) + "  tasks: []\n")
    with pytest.raises(PlaybookError) as info:
        playbook_closure(tmp_path / "site.yml", env={})
    assert info.value.file == str(tmp_path / "site.yml")
    assert info.value.message.startswith("YAML aliases expand to more than")


def test_playbooks_with_a_few_aliases_still_load() -> None:
    root = FIXTURES / "yaml_aliases"
    play = load_yaml(root / "site.yml")[0]
    first, second = play["tasks"]
    assert first["copy"] == {"owner": "root", "mode": "0644", "src": "a.txt", "dest": "/etc/a.txt"}
    assert second["copy"]["owner"] == "root"
    closure = playbook_closure(root / "site.yml", env={})
    assert {p.relative_to(root).as_posix() for p in closure.files} == {"site.yml", "files/a.txt", "files/b.txt"}


def test_the_limits_leave_room_for_real_files(tmp_path: Path) -> None:
    # A large vars file: 10,000 packages with a version each (50,000 nodes).
    path = tmp_path / "packages.yml"
    path.write_text("packages:\n" + "".join(f"  - {{name: pkg{i}, version: '1.{i}'}}\n" for i in range(10_000)))
    assert len(load_yaml(path)["packages"]) == 10_000
    # An alias used many times: expansion is counted, not refused.
    path.write_text("base: &base {a: 1, b: 2, c: [1, 2, 3]}\nitems:\n" + "  - *base\n" * 10_000)
    assert len(load_yaml(path)["items"]) == 10_000


def test_line_numbers_of_mappings_keys_and_items(tmp_path: Path) -> None:
    path = tmp_path / "site.yml"
    path.write_text("# a comment\n- hosts: all\n  vars_files:\n    - a.yml\n    - b.yml\n  tasks:\n"
                    "    - name: one\n      debug: msg=1\n")
    play = load_yaml(path)[0]
    assert line_of(play) == 2
    assert line_of(play, "tasks") == 7
    assert line_of(play["vars_files"], 1) == 5
    assert line_of(play["tasks"][0]) == 7
    assert line_of({"plain": "dict"}) == 0
    assert play == {"hosts": "all", "vars_files": ["a.yml", "b.yml"], "tasks": [{"name": "one", "debug": "msg=1"}]}


def test_vault_and_unsafe_tags_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "vars.yml"
    path.write_text("secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\nraw: !unsafe '{{ x }}'\n"
                    "raw_map: !unsafe {a: '{{ b }}'}\n")
    data = load_yaml(path)
    assert data["secret"].startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert data["raw"] == "{{ x }}"
    assert data["raw_map"] == {"a": "{{ b }}"}


def test_the_loader_is_the_bounded_one() -> None:
    # Every YAML read of the project goes through this loader (libyaml's parser when present).
    assert issubclass(yamlio.AnsibleLoader, yamlio._BoundedComposer)
