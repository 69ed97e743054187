"""Several images: variants and leaves, named by one table, built side by side without collisions.

The fixture is the ``team`` project (base -> mid -> top) with variants that
differ where each test says; builds use the fake packer (tests/fakes/packer),
which makes real qcow2 images and records every run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import executed, fake_packer_env, fake_runs, packer_runs, ran_tasks, run_doit
from vaultdoit import resources
from vaultdoit.errors import ConfigError, GraphError
from vaultdoit.plan import load_project
from vaultdoit.tasks import gen_all

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

PORT_VARIABLES = "".join(
    f'variable "{name}" {{\n  type    = number\n  default = {default}\n}}\n'
    for name, default in (("host_port_min", 2222), ("host_port_max", 4444), ("vnc_port_min", 5900),
                          ("vnc_port_max", 6000), ("http_port_min", 8000), ("http_port_max", 9000)))
PORT_ATTRS = "".join(f"  {name} = var.{name}\n" for name in (
    "host_port_min", "host_port_max", "vnc_port_min", "vnc_port_max", "http_port_min", "http_port_max"))


def team_with(root: Path, toml: str, *, top_by_variant: bool = True, mid_by_variant: bool = False) -> Path:
    """The team fixture with a ``variant`` variable, port-window variables, and the stages that
    read the variant writing a folder per variant."""
    variables = root / "packer/variables.pkr.hcl"
    variables.write_text(variables.read_text() + 'variable "variant" {\n  type    = string\n  default = "none"\n}\n'
                         + PORT_VARIABLES)
    layers = root / "packer/layers.pkr.hcl"
    text = layers.read_text().replace('  memory           = var.memory\n', '  memory           = var.memory\n' + PORT_ATTRS)
    if top_by_variant:
        text = text.replace('output_directory = "${var.out}/top"', 'output_directory = "${var.out}/${var.variant}/top"')
        text = text.replace('    playbook_file = "ansible/top.yml"\n',
                            '    playbook_file = "ansible/top.yml"\n'
                            '    extra_arguments = ["--extra-vars", "flavour=${var.variant}"]\n')
    if mid_by_variant:
        text = text.replace('output_directory = "${var.out}/mid"', 'output_directory = "${var.out}/${var.variant}/mid"')
        text = text.replace('iso_url          = "${var.out}/mid/mid.qcow2"',
                            'iso_url          = "${var.out}/${var.variant}/mid/mid.qcow2"')
        text = text.replace('"flavour=mid"', '"flavour=mid-${var.variant}"')
    layers.write_text(text)
    (root / "vault.toml").write_text(toml)
    return root


TWO = '[variants.demo]\n[variants.production]\n'
SIDE = '''
source "qemu" "side" {
  disk_image       = true
  use_backing_file = true
  iso_url          = "${var.out}/mid/mid.qcow2"
  iso_checksum     = "none"
  format           = "qcow2"
  output_directory = "${var.out}/side"
  vm_name          = "side.qcow2"
}

build {
  sources = ["source.qemu.side"]
}
'''


def add_side_leaf(root: Path) -> None:
    """A second leaf on mid: the graph then has two images."""
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text() + SIDE)




def task_names(project) -> set[str]:
    return {t["basename"] for t in gen_all(project)}


# --- the naming table ------------------------------------------------------------------------------------------


def test_one_image_keeps_the_plain_names(project_copy):
    project = load_project(project_copy("team"))
    assert [(i.name, i.top) for i in project.images] == [(None, "top")]
    assert {"stage:base", "stage:mid", "stage:top", "final_image", "verify"} <= task_names(project)
    assert not any(n.startswith(("final_image:", "verify:")) for n in task_names(project))


def test_variants_that_differ_in_the_top_stage(project_copy):
    root = team_with(project_copy("team"), TWO)
    project = load_project(root)
    assert [s.id for s in project.stages] == ["base", "mid", "top:demo", "top:production"]
    names = task_names(project)
    assert {"stage:base", "stage:mid", "stage:top:demo", "stage:top:production", "final_image:demo",
            "final_image:production", "verify:demo", "verify:production", "final_image", "verify"} <= names
    tasks = {t["basename"]: t for t in gen_all(project)}
    assert tasks["final_image"]["task_dep"] == ["final_image:demo", "final_image:production"]
    assert tasks["final_image:demo"]["targets"][0] == "build/final/team-demo.qcow2"
    assert tasks["stage:top:demo"]["targets"] == ["build/stages/demo/top/top.qcow2"]
    assert "build/stages/mid/mid.qcow2" in tasks["stage:top:production"]["file_dep"]
    # doit list says which stages are shared.
    assert tasks["stage:mid"]["doc"].endswith("[shared by demo, production]")
    assert tasks["stage:top:demo"]["doc"].endswith("[variant demo]")
    # Logs and reports name the variant.
    build = tasks["stage:top:demo"]["actions"][0][1][0].make()  # made when the action runs
    assert build.logfile == root / "build/logs/demo/stage-top.log"
    verify = tasks["verify:production"]
    assert verify["targets"] == ["build/reports/production/verify-team-production.json",
                                 "build/reports/production/verify-team-production.junit.xml"]


def test_variants_that_differ_lower_build_everything_above_per_variant(project_copy):
    root = team_with(project_copy("team"), TWO, mid_by_variant=True)
    project = load_project(root)
    assert [s.id for s in project.stages] == ["base", "mid:demo", "mid:production", "top:demo", "top:production"]
    assert project.stage("top:demo").parent == "mid:demo"


def test_variants_that_change_nothing_make_one_image(project_copy):
    root = project_copy("team")
    (root / "vault.toml").write_text(TWO)
    project = load_project(root)
    assert [s.id for s in project.stages] == ["base", "mid", "top"]
    assert [i.name for i in project.images] == [None]


def test_several_leaves_are_several_images_without_configuration(project_copy):
    root = project_copy("team")
    add_side_leaf(root)
    project = load_project(root)
    assert {i.name for i in project.images} == {"top", "side"}
    names = task_names(project)
    assert {"final_image:top", "final_image:side", "verify:top", "verify:side"} <= names
    # `top` still picks one.
    (root / "vault.toml").write_text('top = "side"\n')
    project = load_project(root)
    assert [(i.name, i.top) for i in project.images] == [(None, "side")]


def test_leaves_times_variants(project_copy):
    root = team_with(project_copy("team"), TWO)
    add_side_leaf(root)
    project = load_project(root)
    assert {i.name for i in project.images} == {"top:demo", "top:production", "side"}
    tasks = {t["basename"]: t for t in gen_all(project)}
    assert tasks["final_image:top:demo"]["targets"][0] == "build/final/team-top-demo.qcow2"
    assert tasks["final_image:side"]["targets"][0] == "build/final/team-side.qcow2"


def test_two_variants_writing_different_images_to_one_folder_is_one_line(project_copy):
    root = team_with(project_copy("team"), TWO, top_by_variant=False)
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace('    playbook_file = "ansible/top.yml"\n',
                                                 '    playbook_file = "ansible/top.yml"\n'
                                                 '    extra_arguments = ["-e", "v=${var.variant}"]\n'))
    with pytest.raises(GraphError) as info:
        load_project(root)
    text = str(info.value)
    assert 'stage "top" differs between variants, but demo and production both write build/stages/top' in text
    assert "layers.pkr.hcl:" in text and "${var.variant}" in text and "\n" not in text


def test_unknown_variant_names_the_known_ones(project_copy):
    root = team_with(project_copy("team"), 'variant = "prod"\n' + TWO)
    with pytest.raises(ConfigError) as info:
        load_project(root)
    assert str(info.value).endswith('unknown variant \'prod\' (fix: known variants: demo, production (or all))')
    assert "vault.toml:1:" in str(info.value)
    # On doit's command line: one line, exit 2, no traceback.
    (root / "vault.toml").write_text(TWO)
    done = run_doit(root, "list", "variant=demo,prod", check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("vaultdoit: error: unknown variant 'prod' (variant= on the command line) "
                                  "(fix: known variants: demo, production (or all))")


def test_a_variant_name_must_be_plain(project_copy):
    root = project_copy("team")
    (root / "vault.toml").write_text('[variants."a:b"]\n')
    with pytest.raises(ConfigError, match="variant name .* is not a plain name"):
        load_project(root)


def test_variant_values_rank_as_documented(project_copy):
    """[variables] < the variant's name < its variables < var files (project's, then the variant's)."""
    root = team_with(project_copy("team"), "")
    (root / "one.pkrvars.hcl").write_text('memory = 3000\n')
    (root / "two.pkrvars.hcl").write_text('out = "build/two"\n')
    (root / "vault.toml").write_text('var_files = ["one.pkrvars.hcl"]\n[variables]\nmemory = 100\nout = "build/x"\n'
                                     '[variants.a.variables]\nmemory = 200\n'
                                     '[variants.b]\nvar_files = ["two.pkrvars.hcl"]\n[variants.b.variables]\n'
                                     'variant = "b-set"\nout = "build/y"\n')
    project = load_project(root)
    a = project.stage("top:a").packer
    b = project.stage("top:b").packer
    assert a is not None and b is not None
    assert a.variables["memory"] == 3000 and a.variables["out"] == "build/x" and a.variables["variant"] == "a"
    assert b.variables["out"] == "build/two" and b.variables["variant"] == "b-set"


def test_log_and_report_folders_decide_no_key(project_copy):
    """A shared stage planned with a variant's log and report folders has the same settings."""
    root = team_with(project_copy("team"), TWO)
    variables = root / "packer/variables.pkr.hcl"
    variables.write_text(variables.read_text() + 'variable "log_dir" {\n  type = string\n  default = "x"\n}\n'
                         'variable "report_dir" {\n  type = string\n  default = "y"\n}\n')
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace('"flavour=mid"', '"flavour=mid report_dir=${var.report_dir} '
                                                 'log=${var.log_dir}/serial.log"'))
    project = load_project(root)
    mid = project.stage("mid")
    assert mid.variant is None  # shared, though each variant's plan had its own folders
    assert mid.settings["provisioners"][0]["extra_arguments"][1] == "flavour=mid report_dir=<reports> log=<logs>/serial.log"
    assert mid.packer is not None and mid.packer.variables["log_dir"] == str(root / "build/logs")
    top = project.stage("top:demo")
    assert top.packer is not None and top.packer.variables["report_dir"] == str(root / "build/reports/demo")


# --- builds with the fake packer --------------------------------------------------------------------------------


def doit(root: Path, env: dict[str, str], *args: str) -> set[str]:
    if "-n" in args:
        return executed(run_doit(root, "--reporter=console", *args, env=env).stdout)
    return ran_tasks(run_doit(root, "--reporter=json", *args, env=env).stdout)


@needs_qemu_img
def test_shared_stages_are_built_once_and_the_variants_side_by_side(project_copy, tmp_path):
    root = team_with(project_copy("team"), TWO)
    env = fake_packer_env(root, tmp_path)
    env["FAKE_PACKER_SLEEP"] = "1"
    ran = doit(root, env, "-n", "2", "final_image")
    assert ran == {"stage:base", "stage:mid", "stage:top:demo", "stage:top:production", "final_image:demo",
                   "final_image:production"}
    built = packer_runs(tmp_path)
    assert sorted(built) == ["base", "mid", "top:demo", "top:production"]
    runs = {r["id"]: r for r in fake_runs(tmp_path)}
    demo, production = runs["top:demo"], runs["top:production"]
    assert demo["start"] < production["end"] and production["start"] < demo["end"], "the two tops ran side by side"
    for variant in ("demo", "production"):
        manifest = json.loads((root / f"build/final/team-{variant}.qcow2.manifest.json").read_text())
        assert manifest["image"]["variant"] == variant
        assert [(s["name"], s["variant"]) for s in manifest["stages"]] == [
            ("base", None), ("mid", None), ("top", variant)]
        record = json.loads((root / f"build/stages/{variant}/top/.vaultdoit-stage.json").read_text())
        assert record["stage"] == f"top:{variant}" and record["variant"] == variant
    # Nothing to do afterwards; one variant alone when asked.
    assert doit(root, env, "final_image") == set()
    (root / "ansible/top.yml").write_text((root / "ansible/top.yml").read_text() + "\n# changed\n")
    assert doit(root, env, "final_image", "variant=production") == {
        "stage:top:production", "final_image:production"}
    assert doit(root, env, "final_image:demo") == {"stage:top:demo", "final_image:demo"}


@needs_qemu_img
def test_four_builds_at_once_share_no_port_folder_log_or_temporary_file(project_copy, tmp_path):
    four = "".join(f"[variants.v{i}]\n" for i in range(4))
    root = team_with(project_copy("team"), "memory = 512\n" + four)
    env = fake_packer_env(root, tmp_path)
    env["FAKE_PACKER_SLEEP"] = "1.5"
    doit(root, env, "-n", "4", "final_image")
    runs = [r for r in fake_runs(tmp_path) if r["id"].startswith("top:")]
    assert len(runs) == 4
    overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]
                   if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "some builds ran at the same time"
    for a, b in overlapping:
        for port in ("host_port", "http_port"):
            low_a, high_a = a["variables"][f"{port}_min"], a["variables"][f"{port}_max"]
            low_b, high_b = b["variables"][f"{port}_min"], b["variables"][f"{port}_max"]
            assert high_a <= low_b or high_b <= low_a, (port, a["id"], b["id"])
    for key in ("tmpdir", "scratch", "ansible_config", "output"):
        assert len({r[key] for r in runs}) == 4, key
    assert len({r["var_files"][0] for r in runs}) == 4
    assert len({r["variables"]["memory"] for r in runs}) == 1 and runs[0]["variables"]["memory"] == 512
    logs = {root / f"build/logs/v{i}/stage-top.log" for i in range(4)}
    assert all(log.is_file() and "top" in log.read_text() for log in logs)
    # Temporary folders are removed after each build, and short enough for Packer's plugin sockets
    # (a Unix socket path has at most 107 bytes).
    assert not any(Path(r["tmpdir"]).exists() for r in runs)
    assert all(len(os.path.join(r["tmpdir"], "packer-plugin1234567890")) < 100 for r in runs)


@needs_qemu_img
def test_the_guard_queues_builds_that_would_overcommit_the_host(project_copy, tmp_path):
    # Each VM asks for every core: one at a time, whatever -n says.
    root = team_with(project_copy("team"), f"memory = 512\ncpus = {resources.host().cpus}\n"
                     "[variants.a]\n[variants.b]\n[variants.c]\n")
    layers = root / "packer/layers.pkr.hcl"
    layers.write_text(layers.read_text().replace("  memory           = var.memory\n",
                                                 "  memory           = var.memory\n  cpus = var.cpus\n"))
    variables = root / "packer/variables.pkr.hcl"
    variables.write_text(variables.read_text() + 'variable "cpus" {\n  type = number\n  default = 1\n}\n')
    env = fake_packer_env(root, tmp_path)
    env["FAKE_PACKER_SLEEP"] = "1"
    done = run_doit(root, "--reporter=console", "-n", "4", "final_image", env=env)
    runs = sorted((r for r in fake_runs(tmp_path) if r["id"].startswith("top:")), key=lambda r: r["start"])
    assert len(runs) == 3
    for first, second in zip(runs, runs[1:]):
        assert second["start"] >= first["end"] - 0.05, "the guard let two full-size VMs run at once"
    assert "waits for room" in done.stderr, done.stderr
    waits = [json.loads((root / f"build/stages/{v}/top/.vaultdoit-stage.json").read_text())["waited_seconds"]
             for v in "abc"]
    assert sorted(waits)[-1] >= 1.0 and sorted(waits)[0] == 0.0


@needs_qemu_img
def test_vm_sizes_rebuild_nothing(project_copy, tmp_path):
    root = team_with(project_copy("team"), TWO)
    env = fake_packer_env(root, tmp_path)
    doit(root, env, "final_image")
    packer_runs(tmp_path)
    (root / "vault.toml").write_text("memory = 2048\ncpus = 2\n" + TWO + "[stages.top]\nmemory = 3072\n")
    assert doit(root, env, "final_image") == set()
    # They do reach the next build.
    (root / "ansible/top.yml").write_text((root / "ansible/top.yml").read_text() + "\n# changed\n")
    doit(root, env, "final_image")
    sizes = {r["id"]: r["variables"]["memory"] for r in fake_runs(tmp_path)}
    assert sizes["top:demo"] == 3072 and sizes["top:production"] == 3072
    # A run's var.memory= wins over vault.toml: the guard counts it and Packer gets it.
    from vaultdoit.tasks.specs import stage_build

    project = load_project(root, variables=(("memory", "1536"),))
    build = stage_build(project, project.stage("top:demo"))
    assert build.vm.memory == 1536 and "memory" not in build.vm_vars and build.variables["memory"] == 1536
    # So does a value the project gives the variable itself (vault.toml [variables], a variant's).
    (root / "vault.toml").write_text("memory = 2048\n[variables]\nmemory = 1792\n" + TWO)
    project = load_project(root)
    build = stage_build(project, project.stage("top:demo"))
    assert build.vm.memory == 1792 and "memory" not in build.vm_vars and build.variables["memory"] == 1792


@needs_qemu_img
def test_a_graph_with_several_leaves_builds_every_leaf(project_copy, tmp_path):
    root = project_copy("team")
    add_side_leaf(root)
    env = fake_packer_env(root, tmp_path)
    assert doit(root, env, "final_image") == {"stage:base", "stage:mid", "stage:top", "stage:side",
                                              "final_image:top", "final_image:side"}
    assert (root / "build/final/team-top.qcow2").is_file() and (root / "build/final/team-side.qcow2").is_file()
    from vaultdoit import qemu_img

    assert "backing-filename" not in qemu_img.info(root / "build/final/team-side.qcow2")


def test_dev_task_needs_tags_and_a_full_build_first(project_copy):
    root = team_with(project_copy("team"), TWO)
    done = run_doit(root, "dev:top:demo", check=False)
    assert done.returncode == 1 and "give --tags and/or --skip-tags" in done.stdout + done.stderr
    done = run_doit(root, "dev:top:demo", "--tags", "app", check=False)
    assert done.returncode == 1
    assert "stage top:demo has no full build to start from" in done.stdout + done.stderr
    assert "doit stage:top:demo" in done.stdout + done.stderr


# --- the parts ---------------------------------------------------------------------------------------------------


def test_host_defaults_leave_the_host_usable():
    host = resources.Host(cpus=2, memory=24 * 1024)
    assert host.default == resources.VMSize(memory=4096, cpus=1)
    assert host.budget == resources.VMSize(memory=18 * 1024, cpus=2)
    small = resources.Host(cpus=1, memory=4096)
    assert small.default == resources.VMSize(memory=1024, cpus=1)
    assert small.budget.memory == 2048
    assert resources.size(2048, None, host) == resources.VMSize(memory=2048, cpus=1)


def test_guard_admits_what_fits_and_gives_each_running_vm_its_own_slot():
    guard = resources.Guard(budget=resources.VMSize(memory=4096, cpus=2), poll=0.05)
    lock = threading.Lock()
    running: list[int] = []
    peak = [0]
    slots: list[list[int]] = []
    said: list[str] = []
    start = threading.Barrier(5)  # all five ask at once, however late their threads start
    two_in = threading.Event()

    def build(name: str) -> None:
        start.wait(timeout=30)
        with guard.room(name, resources.VMSize(memory=1024, cpus=1), say=said.append) as lease:
            with lock:
                running.append(lease.slot)
                peak[0] = max(peak[0], len(running))
                slots.append(list(running))
                if len(running) == 2:
                    two_in.set()
            two_in.wait(timeout=10)  # the first two hold their places until both are in
            threading.Event().wait(0.3)
            with lock:
                running.remove(lease.slot)

    threads = [threading.Thread(target=build, args=(f"stage:{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert peak[0] == 2
    assert all(len(s) == len(set(s)) for s in slots)
    assert any("waits for room" in line for line in said)
    # The three that did not fit waited at least one hold (0.3 s) less their start-up.
    assert sum(1 for w in guard.waits.values() if w > 0.1) >= 3, guard.waits
    # A VM larger than the whole budget still runs, alone.
    with guard.room("big", resources.VMSize(memory=10**6, cpus=64)) as lease:
        assert lease.slot == 0


def test_port_windows_do_not_overlap():
    windows = [resources.port_window(slot) for slot in range(8)]
    for name in ("host_port", "ssh_host_port", "http_port"):
        ranges = [(w[f"{name}_min"], w[f"{name}_max"]) for w in windows]
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert windows[0]["host_port_min"] == windows[0]["ssh_host_port_min"] == 2222 and windows[7]["http_port_max"] < 32768


def test_qemu_img_wrapper_is_written_safely_by_builds_at_once(tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img")
    from vaultdoit import packer

    errors: list[BaseException] = []
    folders: set[Path] = set()
    start = threading.Barrier(12)

    def write(round_dir: Path) -> None:
        try:
            start.wait()
            folders.add(packer.write_shim(round_dir))
        except BaseException as exc:  # noqa: BLE001 - any failure counts
            errors.append(exc)

    for trial in range(25):  # 300 calls, 12 at a time
        round_dir = tmp_path / f"t{trial}"
        threads = [threading.Thread(target=write, args=(round_dir,)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        start.reset()
    assert errors == []
    assert len({f.name for f in folders}) == 1
    for folder in folders:
        shim = folder / "qemu-img"
        assert os.access(shim, os.X_OK) and "exec" in shim.read_text()
        assert [p.name for p in folder.iterdir()] == ["qemu-img"]  # no temporary file left


def test_a_closed_guard_lets_no_waiting_build_start():
    guard = resources.Guard(budget=resources.VMSize(memory=1024, cpus=1), poll=0.05)
    failed: list[str] = []

    def second() -> None:
        try:
            with guard.room("stage:b", resources.VMSize(memory=1024, cpus=1)):
                failed.append("started")
        except Exception as exc:  # noqa: BLE001
            failed.append(str(exc))

    with guard.room("stage:a", resources.VMSize(memory=1024, cpus=1)):
        waiter = threading.Thread(target=second)
        waiter.start()
        threading.Event().wait(0.2)
        guard.close()  # Ctrl-C while stage:b waits
        waiter.join(timeout=10)
    assert failed == ["stage:b did not start: the build was interrupted"]


@needs_qemu_img
def test_the_run_reporter_works_with_builds_side_by_side(project_copy, tmp_path):
    """`doit -n 2` with vaultdoit's own reporter (the default): every image built, the run recorded."""
    root = team_with(project_copy("team"), TWO)
    env = fake_packer_env(root, tmp_path)
    done = run_doit(root, "-n", "2", "final_image", env=env)
    assert sorted(packer_runs(tmp_path)) == ["base", "mid", "top:demo", "top:production"], done.stdout
    for variant in ("demo", "production"):
        assert (root / f"build/final/team-{variant}.qcow2").is_file()
    for name in ("stage:top:demo", "stage:top:production", "final_image:demo", "final_image:production"):
        assert name in done.stdout + done.stderr, name
