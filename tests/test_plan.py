"""The stage graph read from fixture projects and from the repository's own mini profile."""

from __future__ import annotations

from pathlib import Path

import pytest
from doit.loader import generate_tasks

from conftest import FIXTURES, REPO
from vaultdoit.errors import GraphError
from vaultdoit.plan import load_project
from vaultdoit.tasks import gen_all

TEAM = FIXTURES / "projects" / "team"


def rel(paths, root: Path) -> set[str]:
    return {str(Path(p).relative_to(root)) for p in paths}


def test_team_project_graph():
    project = load_project(TEAM)
    assert [s.name for s in project.stages] == ["base", "mid", "top"]
    assert [s.parent for s in project.stages] == [None, "base", "mid"]
    assert project.top.name == "top"
    assert project.config.profile is None
    assert project.stage("mid").output == TEAM / "build/stages/mid/mid.qcow2"


def test_team_inputs_are_the_playbook_closure_and_templates():
    project = load_project(TEAM)
    assert rel(project.stage("base").inputs, TEAM) == {
        "images/upstream.qcow2", "ansible/base.yml",
        "ansible/roles/common/tasks/main.yml", "ansible/roles/common/templates/common.conf.j2",
    }
    assert rel(project.stage("mid").inputs, TEAM) == {"ansible/mid.yml", "ansible/files/mid.txt"}
    top = rel(project.stage("top").inputs, TEAM)
    assert "ansible/roles/app/files/app.sh" in top and "ansible/roles/app/meta/main.yml" in top
    everything = set().union(*(rel(s.inputs, TEAM) for s in project.stages))
    assert "docs/notes.md" not in everything


def test_runtime_settings_stay_out_of_the_cache_key():
    settings = load_project(TEAM).stage("mid").settings
    assert "memory" not in settings["source"] and "accelerator" not in settings["source"]
    assert settings["source"]["iso_url"] == "build/stages/base/base.qcow2"
    assert settings["provisioners"][0]["extra_arguments"] == ["--extra-vars", "flavour=mid"]


def test_task_dicts_are_valid_doit_tasks():
    project = load_project(TEAM)
    # The same path doit takes: the generator through doit's loader (rejects unknown keys).
    generated = generate_tasks("vaultdoit", gen_all(project))
    tasks = {t.name: t for t in generated if not t.subtask_of and t.actions or t.subtask_of}
    for name, task in tasks.items():
        assert task.doc, f"{name} has no doc line"
    assert set(tasks) == {"keys", "stage:base", "stage:mid", "stage:top", "final_image", "verify",
                          "dev:base", "dev:mid", "dev:top"}
    # Relative to the project (doit runs there), so the build state survives a move.
    assert "build/stages/base/base.qcow2" in tasks["stage:mid"].file_dep
    assert tasks["stage:top"].targets == ["build/stages/top/top.qcow2"]
    assert tasks["final_image"].file_dep == {"build/stages/top/top.qcow2"}
    assert tasks["final_image"].targets[0] == "build/final/team.qcow2"


@pytest.mark.parametrize(("scenario", "message"), [
    ("cycle", "stage cycle: "),
    ("missing_parent", 'source "qemu" "child": iso_url build/stages/nothing/nothing.qcow2 is not built by any stage'),
    ("duplicate", 'stages "one" and "two" both write build/same/image.qcow2'),
])
def test_graph_errors(scenario: str, message: str):
    with pytest.raises(GraphError) as info:
        load_project(FIXTURES / "projects" / scenario)
    text = str(info.value)
    assert message in text
    assert ".pkr.hcl" in text and "fix:" in text


def test_mini_profile_of_this_repository():
    project = load_project(REPO, "mini")
    # Two variants that differ in the final stage only: the lower stages are shared.
    assert [s.id for s in project.stages] == ["base", "drivers", "frameworks", "final:demo", "final:production"]
    assert [s.parent for s in project.stages] == [None, "base", "drivers", "frameworks", "frameworks"]
    assert [(i.name, i.top) for i in project.images] == [("demo", "final:demo"), ("production", "final:production")]
    assert project.stage("base").kind == "mmdebstrap"
    drivers = rel(project.stage("drivers").inputs, REPO)
    assert {"build/mini/stages/base/vmlinuz", "build/mini/stages/base/initrd.img"} <= drivers
    assert "ansible/roles/driver_config/templates/vault-driver.conf.j2" in drivers
    assert "ansible/roles/monitoring/files/bin/vault-monitor" not in drivers
    frameworks = rel(project.stage("frameworks").inputs, REPO)
    assert "cache/wheels/manifest.json" in frameworks
    final = rel(project.stage("final:demo").inputs, REPO)
    assert final == rel(project.stage("final:production").inputs, REPO)
    assert "ansible/roles/monitoring/files/bin/vault-monitor" in final
    # monitoring depends on image_common through its meta/main.yml
    assert "ansible/roles/image_common/tasks/main.yml" in final
    assert "build/keys/access_ed25519.pub" in final
    assert project.warnings == ()
