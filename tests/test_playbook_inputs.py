"""Playbook closures: plugin folders, collections, inventories and other inputs, unarchive
sources, dynamic paths, symlinks, and the repository's own playbooks.

Each fixture project under tests/fixtures/ansible/<case>/ holds files the playbook
reads and files it does not: the closure must hold exactly the first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vaultdoit import inputs
from vaultdoit.errors import VaultError
from vaultdoit.model import PlaybookClosure
from vaultdoit.playbook import playbook_closure

FIXTURES = (Path(__file__).parent / "fixtures" / "ansible").absolute()
REPO_ANSIBLE = (Path(__file__).parent.parent / "ansible").absolute()
NO_ENV: dict[str, str] = {"HOME": "/nonexistent-home"}  # nothing from this machine's ~/.ansible


def rel(closure: PlaybookClosure, root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in closure.files}


# --------------------------------------------------------------------------- plugin folders


def test_plugin_folders_beside_the_playbook_and_in_roles() -> None:
    root = FIXTURES / "plugins_beside"
    closure = playbook_closure(root / "site.yml", env=NO_ENV)
    assert rel(closure, root) == {
        "site.yml",
        "library/my_module.py",
        "library/sub/nested.py",
        "module_utils/helper.py",
        "filter_plugins/shout.py",
        "test_plugins/is_even.py",
        "lookup_plugins/vault_kv.py",
        "action_plugins/my_module.py",
        "callback_plugins/timer.py",
        "connection_plugins/chroot2.py",
        "vars_plugins/extra_vars.py",
        "strategy_plugins/careful.py",
        "inventory_plugins/static.py",
        "cache_plugins/memory2.py",
        "doc_fragments/common.py",
        "become_plugins/doas2.py",
        # a role counts as a whole folder: its plugins are in with it
        "roles/tools/tasks/main.yml",
        "roles/tools/library/role_module.py",
        "roles/tools/module_utils/role_helper.py",
        "roles/tools/filter_plugins/role_filters.py",
    }
    assert closure.warnings == ()


def test_plugin_folders_named_in_ansible_cfg_relative_to_it() -> None:
    root = FIXTURES / "plugins_cfg"
    closure = playbook_closure(root / "play" / "site.yml", env=NO_ENV)
    expected = {"play/site.yml", "play/ansible.cfg"} | {
        f"shared/{folder}/{folder}_plugin.py"
        for folder in ("modules", "more_modules", "module_utils", "filters", "tests", "lookups", "actions",
                       "callbacks", "connections", "strategies", "vars", "inventory", "cache", "doc_fragments")}
    assert rel(closure, root) == expected
    assert "shared/README.md" not in rel(closure, root)


def test_a_plugin_path_from_the_environment_replaces_the_cfg_one() -> None:
    root = FIXTURES / "plugins_cfg"
    env = {**NO_ENV, "ANSIBLE_FILTER_PLUGINS": str(root / "env_filters")}
    files = rel(playbook_closure(root / "play" / "site.yml", env=env), root)
    assert "env_filters/from_env.py" in files
    assert "shared/filters/filters_plugin.py" not in files
    assert "shared/modules/modules_plugin.py" in files  # other settings still come from the cfg


# --------------------------------------------------------------------------- collections

COLL = FIXTURES / "collections"
WEB = "play/collections/ansible_collections/acme/web"
COLL_ENV = {**NO_ENV, "ANSIBLE_COLLECTIONS_PATH": f"{COLL / 'env_collections'}:{COLL / 'cfg_collections'}"}


def test_collection_roles_plugins_and_metadata() -> None:
    closure = playbook_closure(COLL / "play" / "site.yml", env=COLL_ENV)
    assert rel(closure, COLL) == {
        "play/site.yml",
        "play/ansible.cfg",
        # acme.web beside the playbook: roles by full name, a meta dependency by short
        # name (found in the role's own collection), import_role, a collection playbook
        f"{WEB}/roles/nginx/tasks/main.yml",
        f"{WEB}/roles/nginx/templates/site.conf.j2",
        f"{WEB}/roles/nginx/meta/main.yml",
        f"{WEB}/roles/base/tasks/main.yml",
        f"{WEB}/roles/tls/tasks/main.yml",
        f"{WEB}/playbooks/extra.yml",
        f"{WEB}/galaxy.yml",
        f"{WEB}/MANIFEST.json",
        f"{WEB}/meta/runtime.yml",
        f"{WEB}/plugins/modules/web_check.py",
        f"{WEB}/plugins/filter/web_filters.py",
        # acme.db: a short role name through the play's collections keyword
        "cfg_collections/ansible_collections/acme/db/MANIFEST.json",
        "cfg_collections/ansible_collections/acme/db/plugins/modules/pg_tune.py",
        "cfg_collections/ansible_collections/acme/db/roles/postgres/tasks/main.yml",
        "cfg_collections/ansible_collections/acme/db/roles/postgres/defaults/main.yml",
        # acme.env: found through ANSIBLE_COLLECTIONS_PATH
        "env_collections/ansible_collections/acme/env/galaxy.yml",
        "env_collections/ansible_collections/acme/env/roles/agent/tasks/main.yml",
        # collections used only through a module or a filter by full name
        "play/collections/ansible_collections/acme/tools/galaxy.yml",
        "play/collections/ansible_collections/acme/tools/plugins/modules/ping.py",
        "play/collections/ansible_collections/acme/filters/galaxy.yml",
        "play/collections/ansible_collections/acme/filters/plugins/filter/upper2.py",
        # a test plugin named in a condition (a Jinja expression without braces)
        "play/collections/ansible_collections/acme/checks/galaxy.yml",
        "play/collections/ansible_collections/acme/checks/plugins/test/debianish.py",
    }
    assert closure.warnings == ()


def test_collections_path_from_ansible_cfg() -> None:
    # Without the environment, acme.db comes from the cfg's collections_path and
    # acme.env is not installed anywhere Ansible would look.
    with pytest.raises(VaultError) as info:
        playbook_closure(COLL / "play" / "site.yml", env=NO_ENV)
    err = info.value
    assert err.file == str(COLL / "play" / "site.yml")
    assert err.message.startswith("role 'acme.env.agent' not found: collection acme.env is not installed "
                                  f"(looked in: {COLL / 'play' / 'collections'}, {COLL / 'cfg_collections'})")
    # ansible.cfg names a collections path in the project: that is where to install
    assert err.hint == f"install it with 'ansible-galaxy collection install -p {COLL / 'cfg_collections'} acme.env'"


def test_default_user_collections_are_searched(tmp_path: Path) -> None:
    # Nothing configured: ansible-core's default user folder (~/.ansible/collections) is used.
    home = tmp_path / "home"
    installed = home / ".ansible" / "collections"
    shutil.copytree(COLL / "env_collections", installed)
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [acme.env.agent]\n")
    closure = playbook_closure(tmp_path / "site.yml", env={"HOME": str(home)})
    assert rel(closure, tmp_path) == {
        "site.yml",
        "home/.ansible/collections/ansible_collections/acme/env/galaxy.yml",
        "home/.ansible/collections/ansible_collections/acme/env/roles/agent/tasks/main.yml",
    }


def test_a_collection_beside_the_playbook_wins_over_configured_roots(tmp_path: Path) -> None:
    shutil.copytree(COLL, tmp_path, dirs_exist_ok=True)
    shadow = tmp_path / "play/collections/ansible_collections/acme/env/roles/agent/tasks"
    shadow.mkdir(parents=True)
    (shadow / "main.yml").write_text("- debug: msg=the project's own copy\n")
    env = {**NO_ENV, "ANSIBLE_COLLECTIONS_PATH": f"{tmp_path / 'env_collections'}:{tmp_path / 'cfg_collections'}"}
    files = rel(playbook_closure(tmp_path / "play" / "site.yml", env=env), tmp_path)
    assert "play/collections/ansible_collections/acme/env/roles/agent/tasks/main.yml" in files
    assert not any(f.startswith("env_collections/") for f in files)


def test_installed_collection_without_the_role(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [acme.web.nope]\n")
    shutil.copytree(COLL / "play" / "collections", tmp_path / "collections")
    with pytest.raises(VaultError) as info:
        playbook_closure(tmp_path / "site.yml", env=NO_ENV)
    home = tmp_path / "collections" / "ansible_collections" / "acme" / "web"
    assert info.value.message == f"role 'acme.web.nope' not found in collection acme.web ({home})"
    assert info.value.hint == "check the role name, or update the collection"


def test_roles_the_build_installs_from_the_galaxy_file_warn_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  roles:\n    - acme.galaxy_role\n    - acme.installed_later.worker\n")
    galaxy = FIXTURES / "other_inputs" / "galaxy" / "requirements.yml"
    closure = playbook_closure(tmp_path / "site.yml", galaxy_file=galaxy, env=NO_ENV)
    assert closure.files == {tmp_path / "site.yml", galaxy}
    assert closure.warnings == (
        f"{tmp_path / 'site.yml'}:3: role 'acme.galaxy_role' is installed from {galaxy} at build time: "
        "it counts by that file only",
        f"{tmp_path / 'site.yml'}:4: role 'acme.installed_later.worker' is installed from {galaxy} at build "
        "time: it counts by that file only",
    )


def test_roles_bundled_with_the_ansible_package_are_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    (site / "ansible_collections" / "vendor" / "kit" / "roles" / "setup" / "tasks").mkdir(parents=True)
    (site / "ansible_collections" / "vendor" / "kit" / "roles" / "setup" / "tasks" / "main.yml").write_text("[]\n")
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "site.yml").write_text("- hosts: all\n  roles: [vendor.kit.setup]\n")
    closure = playbook_closure(tmp_path / "p" / "site.yml", env=NO_ENV)
    assert closure.files == {tmp_path / "p" / "site.yml"}


# --------------------------------------------------------------------------- other inputs


def test_requirements_inventories_and_extra_vars_files() -> None:
    root = FIXTURES / "other_inputs"
    closure = playbook_closure(
        root / "site.yml", env=NO_ENV,
        inventories=[root / "inventory" / "hosts.ini", root / "inventory_dir"],
        extra_var_files=[root / "vars" / "build.yml"],
        galaxy_file=root / "galaxy" / "requirements.yml")
    assert rel(closure, root) == {
        "site.yml",
        "roles/requirements.yml",
        "collections/requirements.yml",
        "galaxy/requirements.yml",
        "inventory/hosts.ini",
        "inventory/group_vars/web.yml",
        "inventory/host_vars/web1.yml",
        "inventory_dir/hosts.yml",
        "inventory_dir/group_vars/all.yml",
        "vars/build.yml",
        # bundle_dir comes from the @file: the path is exact, not a folder
        "files/bundles/bundle.txt",
    }
    assert closure.warnings == ()


@pytest.mark.parametrize(("argument", "message"), [
    ("inventories", "inventory not found"),
    ("extra_var_files", "extra vars file not found"),
    ("galaxy_file", "galaxy file not found"),
])
def test_named_inputs_must_exist(argument: str, message: str) -> None:
    missing = FIXTURES / "other_inputs" / "nope.yml"
    value: object = missing if argument == "galaxy_file" else [missing]
    with pytest.raises(VaultError) as info:
        playbook_closure(FIXTURES / "other_inputs" / "site.yml", env=NO_ENV,
                         **{argument: value})  # type: ignore[arg-type]
    assert info.value.message == message
    assert info.value.file == str(missing)


# --------------------------------------------------------------------------- unarchive


def test_unarchive_sources_in_every_spelling() -> None:
    root = FIXTURES / "unarchive"
    closure = playbook_closure(root / "site.yml", env=NO_ENV)
    assert rel(closure, root) == {"site.yml"} | {
        f"files/{name}.tar.gz"
        for name in ("free", "dict", "fqcn", "action", "action_dict", "args", "remote_no", "copy_yes", "handler")}
    assert closure.warnings == ()


@pytest.mark.parametrize("task", [
    "unarchive: src=gone.tar.gz dest=/opt",
    "unarchive: {src: gone.tar.gz, dest: /opt}",
    "ansible.builtin.unarchive: {src: gone.tar.gz, dest: /opt, remote_src: no}",
    "action: unarchive src=gone.tar.gz dest=/opt copy=yes",
])
def test_a_missing_local_archive_is_an_error(tmp_path: Path, task: str) -> None:
    (tmp_path / "site.yml").write_text(f"- hosts: all\n  tasks:\n    - {task}\n")
    with pytest.raises(VaultError) as info:
        playbook_closure(tmp_path / "site.yml", env=NO_ENV)
    assert info.value.message == "unarchive src 'gone.tar.gz' not found"


def test_an_archive_whose_place_is_decided_at_run_time_counts_if_it_exists(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "maybe.tar.gz").write_text("x\n")
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  tasks:\n"
        "    - unarchive: {src: maybe.tar.gz, dest: /opt, remote_src: '{{ on_target }}'}\n"
        "    - unarchive: {src: elsewhere.tar.gz, dest: /opt, remote_src: '{{ on_target }}'}\n")
    closure = playbook_closure(tmp_path / "site.yml", env=NO_ENV)
    assert rel(closure, tmp_path) == {"site.yml", "files/maybe.tar.gz"}


# --------------------------------------------------------------------------- paths from unknown values


def test_dynamic_paths_widen_to_their_folder_with_one_warning_naming_the_line() -> None:
    root = FIXTURES / "dynamic"
    site = root / "site.yml"
    closure = playbook_closure(site, env=NO_ENV)
    assert rel(closure, root) == {
        "site.yml",
        "files/keys/alice.pub",
        "files/keys/bob.pub",
        "files/keys/root.pub",
        "files/certs/web1.pem",
        "templates/motd.j2",
        "os_vars/Debian.yml",  # with_first_found: every candidate that exists
        "os_vars/default.yml",
        "files/flags/enabled",  # a lookup in a condition
        "roles/app/tasks/main.yml",
        "roles/app/tasks/fast.yml",
    }
    assert sorted(closure.warnings) == sorted([
        f"{site}:3: lookup('file', 'keys/' ~ item ~ '.pub') is dynamic; tracking every file in files/keys/",
        f"{site}:8: lookup('template', motd_template) is dynamic; tracking every file in templates/",
        f"{site}:12: with_file 'certs/{{{{ inventory_hostname }}}}.pem' is dynamic; "
        "tracking every file in files/certs/",
        f"{site}:20: include_vars '{{{{ item }}}}' is dynamic; tracking the files directly in the playbook's folder",
        f"{site}:28: tasks_from '{{{{ app_mode }}}}' is dynamic; tracking every file in roles/app/tasks/",
    ])


# --------------------------------------------------------------------------- symlinks


def test_symlinks_count_by_their_target_under_the_links_path() -> None:
    root = FIXTURES / "symlinks"
    assert (root / "roles" / "app" / "files").is_symlink()
    closure = playbook_closure(root / "site.yml", env=NO_ENV)
    assert rel(closure, root) == {
        "site.yml",
        "files/shared.conf",  # a link to common/shared.conf
        "roles/app/tasks/main.yml",
        "roles/app/files/app.conf",  # the role's files/ is a link to common/
        "roles/app/files/shared.conf",
        "roles/app/files/nested/more.conf",
    }


def _copy_symlinks(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(FIXTURES / "symlinks", root, symlinks=True)
    return root


def test_a_file_symlink_loop_is_a_one_line_error(tmp_path: Path) -> None:
    root = _copy_symlinks(tmp_path)
    os.symlink("b.conf", root / "common" / "a.conf")
    os.symlink("a.conf", root / "common" / "b.conf")
    with pytest.raises(VaultError) as info:
        playbook_closure(root / "site.yml", env=NO_ENV)
    assert info.value.message == "symlink loop"
    assert info.value.file in {str(root / "roles/app/files/a.conf"), str(root / "roles/app/files/b.conf")}
    assert "\n" not in str(info.value)


def test_a_folder_linking_to_its_ancestor_in_a_role_is_an_error(tmp_path: Path) -> None:
    root = _copy_symlinks(tmp_path)
    os.symlink("../..", root / "common" / "nested" / "up")
    with pytest.raises(VaultError) as info:
        playbook_closure(root / "site.yml", env=NO_ENV)
    assert info.value.file == str(root / "roles/app/files/nested/up")
    assert info.value.message.startswith("symlink loop")


def test_a_looping_link_named_by_a_task_is_an_error_naming_the_link(tmp_path: Path) -> None:
    root = _copy_symlinks(tmp_path)
    (root / "files" / "shared.conf").unlink()
    os.symlink("shared.conf", root / "files" / "shared.conf")
    with pytest.raises(VaultError) as info:
        playbook_closure(root / "site.yml", env=NO_ENV)
    assert info.value.message == "symlink loop"
    assert info.value.file == str(root / "files" / "shared.conf")


def test_a_role_folder_reached_through_a_looping_link(tmp_path: Path) -> None:
    root = _copy_symlinks(tmp_path)
    os.symlink("loop_b", root / "roles" / "loop_a")
    os.symlink("loop_a", root / "roles" / "loop_b")
    (root / "site.yml").write_text("- hosts: all\n  roles: [loop_a]\n")
    with pytest.raises(VaultError) as info:
        playbook_closure(root / "site.yml", env=NO_ENV)
    assert info.value.message == "symlink loop"
    assert info.value.file == str(root / "roles" / "loop_a")


# --------------------------------------------------------------------------- the repository's playbooks

SHARED = {"ansible.cfg", "group_vars/all.yml", "roles/image_common/defaults/main.yml",
          "roles/image_common/tasks/main.yml"}


@pytest.mark.parametrize(("playbook", "extra_vars", "own"), [
    ("drivers.yml", {"vault_stage": "drivers", "apt_proxy": ""}, {
        "drivers.yml",
        "roles/driver_config/defaults/main.yml",
        "roles/driver_config/tasks/main.yml",
        "roles/driver_config/templates/vault-driver.conf.j2",
    }),
    ("frameworks.yml", {"vault_stage": "frameworks", "wheelhouse_dir": "/project/cache/wheels",
                        "report_dir": "/project/build/reports", "apt_proxy": ""}, {
        "frameworks.yml",
        "vars/frameworks.yml",
        "roles/python_env/defaults/main.yml",
        "roles/python_env/tasks/main.yml",
    }),
    ("final.yml", {"vault_stage": "final", "access_pubkey_file": "/project/build/keys/access_ed25519.pub",
                   "report_dir": "/project/build/reports", "apt_proxy": ""}, {
        "final.yml",
        "files/README.image.md",
        "roles/monitoring/defaults/main.yml",
        "roles/monitoring/files/bin/vault-monitor",
        "roles/monitoring/files/bin/vault-health",
        "roles/monitoring/files/units/vault-monitor.service",
        "roles/monitoring/files/units/vault-health.service",
        "roles/monitoring/files/units/vault-health.timer",
        "roles/monitoring/files/units/vault-firstboot.service",
        "roles/monitoring/meta/main.yml",
        "roles/monitoring/tasks/main.yml",
        "roles/monitoring/templates/monitor.json.j2",
        "roles/cleanup/tasks/main.yml",
        "roles/cleanup/files/vault-build-cleanup",
        "roles/cleanup/files/vault-build-cleanup.service",
    }),
])
def test_the_repository_playbooks_read_exactly_their_own_files(playbook: str, extra_vars: dict[str, str],
                                                               own: set[str]) -> None:
    closure = playbook_closure(REPO_ANSIBLE / playbook, ansible_cfg=REPO_ANSIBLE / "ansible.cfg",
                               extra_vars=extra_vars, env=NO_ENV)
    assert rel(closure, REPO_ANSIBLE) == SHARED | own
    assert closure.warnings == ()


# --------------------------------------------------------------------------- work done


def _synthetic_project(root: Path, roles: int = 30, files_per_role: int = 20) -> int:
    """A playbook with ``roles`` roles, each pulled in three ways; returns the file count."""
    count = 0
    for index in range(roles):
        role = root / "roles" / f"role{index}"
        (role / "tasks").mkdir(parents=True)
        (role / "templates").mkdir()
        (role / "files" / "tree").mkdir(parents=True)
        deps = f"dependencies: [role{index - 1}]\n" if index else "dependencies: []\n"
        (role / "meta").mkdir()
        (role / "meta" / "main.yml").write_text(deps)
        tasks = [f"- template: {{src: t{n}.j2, dest: /etc/r{index}-{n}}}\n" for n in range(5)]
        tasks.append("- include_tasks: extra.yml\n")
        (role / "tasks" / "main.yml").write_text("".join(tasks))
        (role / "tasks" / "extra.yml").write_text("- copy: {src: tree/, dest: /opt/}\n")
        for n in range(5):
            (role / "templates" / f"t{n}.j2").write_text(f"{index} {n}\n")
        for n in range(files_per_role - 8):  # 5 templates, 2 task files and the meta file make 8
            (role / "files" / "tree" / f"f{n}.txt").write_text(f"{n}\n")
        count += files_per_role
    plays = "".join(f"    - role{index}\n" for index in range(roles))
    includes = "".join(f"    - include_role: {{name: role{index}}}\n" for index in range(roles))
    (root / "site.yml").write_text(f"- hosts: all\n  roles:\n{plays}  tasks:\n{includes}")
    return count + 1


def test_each_folder_is_walked_once_per_closure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _synthetic_project(tmp_path)
    walked: list[Path] = []
    real_tree = inputs.tree

    def counting_tree(folder: Path, **kwargs: object) -> list[Path]:
        walked.append(folder)
        return real_tree(folder, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inputs, "tree", counting_tree)
    closure = playbook_closure(tmp_path / "site.yml", env=NO_ENV)
    assert len(closure.files) == expected
    assert len(walked) == len(set(walked))  # 30 roles, each named by roles:, include_role and meta
