"""Bad input of every kind (vault.toml, templates, playbooks, the environment) is one line
naming the file and the fix, exit 2, no traceback, within seconds, nothing written but
vaultdoit's own state folder. Each case mutates a copy of the `team` fixture and runs
`doit final_image` with the fake packer (which must never be reached)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import packer_runs, run_doit

Mutation = Callable[[Path], dict[str, str] | None]


def edit(name: str, old: str, new: str) -> Mutation:
    def change(root: Path) -> None:
        path = root / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    return change


def append(name: str, text: str) -> Mutation:
    def change(root: Path) -> None:
        with open(root / name, "a") as fh:
            fh.write(text)
    return change


def write(name: str, data: str | bytes) -> Mutation:
    def change(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return change


def environ(**values: str) -> Mutation:
    def change(root: Path) -> dict[str, str]:
        return dict(values)
    return change


def both(*changes: Mutation) -> Mutation:
    def change(root: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        for one in changes:
            env.update(one(root) or {})
        return env
    return change


def symlink(name: str, target: str) -> Mutation:
    def change(root: Path) -> None:
        os.symlink(target, root / name)
    return change


BASE = "packer/base.pkr.hcl"
LAYERS = "packer/layers.pkr.hcl"
VARS = "packer/variables.pkr.hcl"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))

CASES: list[tuple[str, Mutation, str]] = [
    # --- templates
    ("HCL syntax error", append(BASE, "\nsource \"qemu\" \"x\" {\n"), "HCL syntax error"),
    ("undeclared variable in a graph setting", edit(BASE, '"${var.out}/base"', '"${var.nope}/base"'),
     'nope'),
    ("variable with no value in a graph setting", both(
        edit(VARS, 'variable "out" {\n  type    = string\n  default = "build/stages"\n}',
             'variable "out" {\n  type = string\n}')),
     'variable "out" has no value'),
    ("unknown function in a graph setting", edit(BASE, '"${var.out}/base"', '"${nosuchfn(var.out)}/base"'),
     "nosuchfn"),
    ("duplicate source block", append(BASE, '\nsource "qemu" "base" {\n  iso_url = "x"\n}\n'),
     'source "qemu" "base"'),
    ("duplicate variable", append(VARS, '\nvariable "out" {\n  default = "x"\n}\n'), 'variable "out"'),
    ("build names a missing source", append(BASE, '\nbuild {\n  sources = ["source.qemu.ghost"]\n}\n'),
     "ghost"),
    ("empty iso_url", edit(BASE, 'iso_url          = "images/upstream.qcow2"', 'iso_url = ""'), "iso_url is empty"),
    ("timestamp() in an output path", edit(BASE, 'vm_name          = "base.qcow2"',
                                            'vm_name = "base-${timestamp()}.qcow2"'), "timestamp()"),
    ("deeply nested expression", edit(BASE, 'vm_name          = "base.qcow2"',
                                      'vm_name = ' + "(" * 120 + '"base.qcow2"' + ")" * 120), "nested"),
    ("template over the size limit", append(BASE, "\n#" + "x" * 400_000 + "\n"), "KiB"),
    ("template not UTF-8", write("packer/bad.pkr.hcl", b"variable \"x\" {\n  default = \"\xff\xfe\"\n}\n"),
     "UTF-8"),
    ("JSON template beside HCL ones", write("packer/old.pkr.json", "{}"), "JSON"),
    ("output folder outside the project", edit(BASE, '"${var.out}/base"', '"/tmp/vaultdoit-victim"'),
     "is outside the project"),
    ("output folder that holds the user's files", edit(BASE, '"${var.out}/base"', '"ansible"'),
     "already exists and was not made by a stage build"),
    ("two stages write one image", both(edit(LAYERS, '"${var.out}/top"', '"${var.out}/mid"'),
                                        edit(LAYERS, '"top.qcow2"', '"mid.qcow2"')), "both write"),
    ("two stages share one folder", edit(LAYERS, '"${var.out}/top"', '"${var.out}/mid"'),
     "share the output folder"),
    ("iso_url leads back to the stage itself", edit(LAYERS, 'iso_url          = "${var.out}/base/base.qcow2"',
                                                    'iso_url          = "${var.out}/top/top.qcow2"'),
     "stage cycle"),
    ("malformed iso_checksum", edit(BASE, 'iso_checksum     = "none"', 'iso_checksum     = "md9:abc"'),
     "iso_checksum"),
    ("dynamic block in a qemu source", edit(BASE, 'memory           = var.memory',
                                            'memory = var.memory\n  dynamic "x" {\n    for_each = []\n'
                                            '    content {}\n  }'), "dynamic"),
    ("symlink loop in an uploaded folder", both(
        write("uploads/tree/file.txt", "x\n"), symlink("uploads/tree/up", ".."),
        append(BASE, '\nbuild {\n  name = "more"\n  source "source.qemu.base" {\n    name = "extra"\n'
                     '    output_directory = "build/stages/extra"\n  }\n  provisioner "file" {\n'
                     '    source = "uploads/tree"\n    destination = "/tmp"\n  }\n}\n')), "symlink loop"),
    # --- playbooks
    ("YAML syntax error in a playbook", write("ansible/top.yml", "- hosts: all\n  roles: [app\n"), "invalid YAML"),
    ("playbook that is not a list", write("ansible/top.yml", "hosts: all\n"), "a playbook must be a list"),
    ("role that does not exist", edit("ansible/top.yml", "- app", "- nowhere"), "role 'nowhere' not found"),
    ("collection role that is not installed", edit("ansible/top.yml", "- app", "- acme.tools.thing"),
     "acme.tools"),
    ("include_tasks of a missing file", write("ansible/roles/app/tasks/main.yml",
                                             "- include_tasks: missing.yml\n"), "missing.yml"),
    ("YAML alias bomb", write("ansible/top.yml", "- hosts: all\n  vars:\n" + "".join(
        "    " + line + "\n" for line in BOMB.splitlines()) + "  roles: [app]\n"), "alias"),
    ("YAML nested too deep", write("ansible/top.yml", "- hosts: all\n  vars:\n    x: " + "[" * 150 + "]" * 150
                                   + "\n"), "deep"),
    ("playbook over the size limit", write("ansible/top.yml", "- hosts: all\n" + "#" * (5 * 2**20) + "\n"),
     "MiB"),
    ("task that is not a mapping", write("ansible/roles/app/tasks/main.yml", "- just a string\n"),
     "a task must be a mapping"),
    ("vars_files entry that does not exist", write("ansible/top.yml",
                                                   "- hosts: all\n  vars_files: [vars/nothing.yml]\n"),
     "vars/nothing.yml"),
    ("role symlinked into itself", both(symlink("ansible/roles/app/files/loop", "../../app")), "loop"),
    ("playbook not UTF-8", write("ansible/top.yml", b"- hosts: all\n  vars:\n    x: \"\xff\"\n"), "not UTF-8"),
    # --- vault.toml
    ("vault.toml: unknown setting", write("vault.toml", 'acelerator = "tcg"\n'), 'did you mean "accelerator"'),
    ("vault.toml: wrong type", write("vault.toml", "var_files = [1, 2]\n"), "var_files must be a list of strings"),
    ("vault.toml: value not allowed", write("vault.toml", 'accelerator = "gpu"\n'), "accelerator"),
    ("vault.toml: not UTF-8", write("vault.toml", b'accelerator = "\xff"\n'), "UTF-8"),
    ("vault.toml: TOML syntax error", write("vault.toml", "accelerator = \n"), "vault.toml"),
    ("vault.toml: image name leaves the project", write("vault.toml", 'image_name = "../../x"\n'), "image_name"),
    ("vault.toml: build key outside the project", write("vault.toml", 'build_key = "../../id_ed25519"\n'),
     "outside the project"),
    ("vault.toml: unknown stage table", write("vault.toml", "[stages.tpo]\nstall_timeout = 5\n"), "tpo"),
    # --- environment
    ("VAULTDOIT_PROFILE names no profile", both(
        write("vault.toml", '[profiles.one]\npacker_dir = "packer"\n'), environ(VAULTDOIT_PROFILE="two")),
     "unknown profile"),
    ("VAULTDOIT_ALLOWED_PATHS with a relative path", environ(VAULTDOIT_ALLOWED_PATHS="relative/dir"),
     "VAULTDOIT_ALLOWED_PATHS"),
    ("VAULTDOIT_LOCK with a bad value", environ(VAULTDOIT_LOCK="sometimes"), "VAULTDOIT_LOCK"),
    ("PKR_VAR_ of a number variable that is not one", environ(PKR_VAR_memory="lots"), "PKR_VAR_memory"),
]


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


def user_files(root: Path) -> set[Path]:
    """The project's files, without what the build and Python write (build/, dodo.py's bytecode)."""
    return {p for p in root.rglob("*") if not {"build", "__pycache__"} & set(p.relative_to(root).parts)}


@pytest.mark.parametrize(("name", "mutation", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(team, name: str, mutation: Mutation, expected: str):
    root, env, log = team
    extra = mutation(root) or {}
    before = user_files(root)
    start = time.monotonic()
    out = run_doit(root, "final_image", env={**env, **extra}, check=False)
    elapsed = time.monotonic() - start
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert len(lines) == 1 and lines[0].startswith("vaultdoit: error: "), out.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert len(lines[0]) < 600
    assert elapsed < 20, elapsed  # bounded work, even on a shared, loaded host
    assert packer_runs(log.parent) == []
    # Nothing of the user's was written or removed.
    assert user_files(root) == before
