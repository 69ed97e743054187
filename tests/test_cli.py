"""The click CLI: explain, status, init, and the error-to-exit-code mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from conftest import FIXTURES, TESTS, run_doit
from vaultdoit.cli import cli
from vaultdoit.plan import load_project


def fake_env(root: Path, tmp: Path) -> dict[str, str]:
    project = load_project(root)
    plan = {s.name: {"output": str(s.output), "parent": str(project.parent(s).output) if s.parent else None}
            for s in project.stages}
    (tmp / "plan.json").write_text(json.dumps(plan))
    return {"PATH": f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_PACKER_PLAN": str(tmp / "plan.json"), "FAKE_PACKER_LOG": str(tmp / "packer.log")}


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["-C", str(root), *args])


def test_explain_names_changed_inputs_and_settings(project_copy, tmp_path: Path):
    root = project_copy("team")
    result = invoke(root, "explain", "stage:top")
    assert result.exit_code == 0
    assert "never built" in result.output

    run_doit(root, "final_image", env=fake_env(root, tmp_path))
    result = invoke(root, "explain", "stage:top")
    record = json.loads((root / "build/stages/top/.vaultdoit-stage.json").read_text())
    assert result.output.splitlines() == ["stage:top: up to date", f"  key: {record['key']}", "  image: built here"]

    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed\n")
    result = invoke(root, "explain", "stage:top")
    assert "stage:top: will run" in result.output
    assert "input changed: ansible/roles/app/files/app.sh" in result.output
    final = invoke(root, "explain", "final_image").output
    assert "input build/stages/top/top.qcow2 will be rebuilt by stage:top" in final
    assert invoke(root, "explain", "stage:mid").output.splitlines()[0] == "stage:mid: up to date"
    changed = invoke(root, "explain", "stage:top").output
    assert f"  image built for: {record['key']}" in changed and f"  key: {record['key']}" not in changed

    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace("flavour=mid", "flavour=other"))
    mid = invoke(root, "explain", "stage:mid").output
    assert "setting changed: provisioners" in mid and "flavour=other" in mid

    status = invoke(root, "status").output
    assert "stage:base" in status and "up to date" in status
    assert "stage:mid" in status and "will run" in status


def test_unknown_task_is_a_user_error(project_copy):
    root = project_copy("team")
    result = invoke(root, "explain", "stage:nope")
    assert result.exit_code == 2
    assert "no task named 'stage:nope'" in result.output and "stage:top" in result.output


def test_graph_error_is_one_line_and_exit_2():
    result = invoke(FIXTURES / "projects" / "cycle", "status")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vaultdoit: error: ")
    assert "stage cycle" in lines[0] and "Traceback" not in result.output


def test_doit_reports_a_bad_template_in_one_line(project_copy):
    root = project_copy("team")
    (root / "packer/broken.pkr.hcl").write_text('source "qemu" "x" {\n  iso_url = \n}\n')
    proc = run_doit(root, "list", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "broken.pkr.hcl:2: HCL syntax error at column 13" in proc.stderr


def test_init_writes_a_working_dodo(tmp_path: Path):
    target = tmp_path / "proj"
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert (target / "dodo.py").read_text() == (FIXTURES / "projects/team/dodo.py").read_text()
    again = CliRunner().invoke(cli, ["init", str(target)])
    assert again.exit_code == 2 and "--force" in again.output
