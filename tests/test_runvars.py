"""Per-run Packer variables on doit's command line: several at once, in stage keys like any variable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import fake_packer_env, packer_runs, ran_tasks, run_doit
from vaultdoit import runvars
from vaultdoit.cli import cli
from vaultdoit.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture
def sized(project_copy, tmp_path: Path):
    """The team project with a ``disk_size`` variable that the top stage's image depends on."""
    root = project_copy("team")
    (root / "packer/variables.pkr.hcl").write_text((root / "packer/variables.pkr.hcl").read_text() + '''
variable "disk_size" {
  type    = string
  default = "4G"
}
''')
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace('  vm_name          = "top.qcow2"\n',
                                                 '  vm_name          = "top.qcow2"\n  disk_size        = var.disk_size\n'))
    work = tmp_path / "fake"
    env = {**fake_packer_env(root, work), "FAKE_PACKER_ARGS": str(work / "args.jsonl")}
    return root, env, work


def doit(root: Path, env: dict[str, str], *args: str) -> set[str]:
    return ran_tasks(run_doit(root, "--reporter=json", *args, env=env).stdout)


def test_variables_given_on_the_command_line_decide_stage_keys(sized):
    root, env, work = sized
    assert doit(root, env, "final_image") == {"stage:base", "stage:mid", "stage:top", "final_image"}
    packer_runs(work)
    # Two variables at once: one the image depends on, one only the build VM does.
    assert doit(root, env, "final_image", "var.disk_size=8G", "var.memory=4096") == {"stage:top", "final_image"}
    assert packer_runs(work) == ["top"]
    # The same values again: nothing to do; the default again: the top stage is rebuilt.
    assert doit(root, env, "final_image", "var.disk_size=8G", "var.memory=4096") == set()
    assert doit(root, env, "final_image", "var.memory=2048") == {"stage:top", "final_image"}
    # memory alone never rebuilds (a setting of the build VM, not of the image).
    assert doit(root, env, "final_image", "var.memory=512") == set()


def test_packer_gets_the_command_line_values(sized):
    root, env, work = sized
    run_doit(root, "final_image", "var.disk_size=6G", "var.memory=3000", env=env)
    calls = [json.loads(line) for line in (work / "args.jsonl").read_text().splitlines()]
    assert [c["args"][-1] for c in calls] == [str(root / "packer")] * 3
    for call in calls:  # in vaultdoit's private var file (see actions._packer), removed after the build
        (text,) = call["var_files"].values()
        assert 'disk_size = "6G"' in text and "memory = 3000" in text
    assert not list((root / "build/.vaultdoit/vars").glob("*.pkrvars.hcl"))


def test_status_and_explain_take_the_same_variables(sized):
    root, env, _ = sized
    run_doit(root, "final_image", env=env)
    result = CliRunner().invoke(cli, ["-C", str(root), "--var", "disk_size=8G", "status"])
    assert result.exit_code == 1
    assert "stage:top    will run: setting changed: source.disk_size: \"4G\" -> \"8G\"" in result.output
    assert CliRunner().invoke(cli, ["-C", str(root), "status", "final_image"]).exit_code == 0


def test_an_undeclared_variable_is_one_line_with_a_suggestion(sized):
    root, env, _ = sized
    result = run_doit(root, "list", "var.disksize=8G", env=env, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("vaultdoit: error: ") and 'var.disksize: no variable "disksize" is declared' in line
    assert 'did you mean "disk_size"?' in line


def test_parsing():
    assert runvars.parse(["b=2", "a=x=y", "a=1"]) == (("a", "1"), ("b", "2"))
    with pytest.raises(ConfigError, match="not a Packer variable assignment"):
        runvars.parse(["9x=1"])
    assert runvars.suffix(()) == "" and runvars.suffix((("a", "1"),)) != runvars.suffix((("a", "2"),))
    assert runvars.flag("keep_failed", "yes") is True and runvars.flag("keep_failed", "0") is False
    with pytest.raises(ConfigError, match="not a yes/no value"):
        runvars.flag("keep_failed", "maybe")
