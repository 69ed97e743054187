"""A no-op run stays cheap: with the plan kept, loading the tasks imports none of the heavy
readers or the build machinery (python-hcl2, PyYAML, click, QMP, urllib, the actions), nor the
planner, the vault.toml reader or what makes the actions' arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import fake_packer_env

HEAVY = ("hcl2", "lark", "yaml", "click", "qemu.qmp", "asyncio", "urllib.request", "tomllib",
         "vaultdoit.actions", "vaultdoit.hcl.syntax", "vaultdoit.playbook", "vaultdoit.vm", "oras", "requests",
         "rich", "vaultdoit.report", "vaultdoit.graph", "vaultdoit.live", "vaultdoit.explain",
         "vaultdoit.sbom", "vaultdoit.signing", "cyclonedx", "vaultdoit.final", "vaultdoit.dev",
         "vaultdoit.plan", "vaultdoit.config_file", "vaultdoit.settings", "vaultdoit.inputs", "vaultdoit.iso_store",
         "vaultdoit.tasks.specs", "vaultdoit.buildspec", "vaultdoit.resources", "vaultdoit.bootspec",
         "vaultdoit.bootstrap", "vaultdoit.remote")

LOAD = """
import sys
from pathlib import Path
from vaultdoit import dodo
names = dodo.setup(str(Path(sys.argv[1]) / "dodo.py"))
tasks = list(names["task_vaultdoit"]())
print(" ".join(sorted(m for m in sys.modules if m in {heavy})))
""".replace("{heavy}", repr(set(HEAVY)))


def test_loading_a_kept_plan_imports_nothing_heavy(project_copy, tmp_path: Path):
    root = project_copy("team")
    past = time.time() - 10
    for dirpath, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            os.utime(os.path.join(dirpath, name), (past, past))
    env = {**os.environ, **fake_packer_env(root, tmp_path / "fake")}
    first = subprocess.run([sys.executable, "-c", LOAD, str(root)], capture_output=True, text=True, env=env,
                           cwd=root, check=True)
    assert "hcl2" in first.stdout  # the first load plans
    second = subprocess.run([sys.executable, "-c", LOAD, str(root)], capture_output=True, text=True, env=env,
                            cwd=root, check=True)
    assert second.stdout.strip() == "", second.stdout


def test_an_actions_argument_is_made_when_it_runs_and_its_failure_is_one_line(monkeypatch):
    from doit.exceptions import TaskFailed

    from vaultdoit.tasks import specs
    from vaultdoit.tasks.common import Later, action

    made: list[tuple[str, ...]] = []

    def spec(*args: str) -> str:
        made.append(args)
        raise PermissionError(13, "Permission denied", "/project/packages.txt")

    monkeypatch.setattr(specs, "bootstrap_spec", spec, raising=True)
    later = Later("bootstrap_spec", "project", "stage")
    run = action("build_stage")
    assert made == []  # nothing is made when the task is generated
    failed = run(later)
    assert made == [("project", "stage")]
    assert isinstance(failed, TaskFailed)
    assert "\n" not in str(failed.message) and "/project/packages.txt" in str(failed.message)
