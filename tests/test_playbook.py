"""Tests for vaultdoit.playbook: the static file closure of Ansible playbooks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vaultdoit.errors import PlaybookError
from vaultdoit.model import PlaybookClosure
from vaultdoit.playbook import load_yaml, playbook_closure

FIXTURES = Path(__file__).parent / "fixtures" / "ansible"


def rel(closure: PlaybookClosure, root: Path) -> set[str]:
    """The closure as POSIX paths relative to ``root``."""
    return {p.relative_to(root).as_posix() for p in closure.files}


def closure_of(scenario: str, playbook: str = "site.yml", **kwargs: object) -> tuple[PlaybookClosure, Path]:
    root = (FIXTURES / scenario).absolute()
    return playbook_closure(root / playbook, **kwargs), root  # type: ignore[arg-type]


def error_of(playbook: Path, **kwargs: object) -> PlaybookError:
    with pytest.raises(PlaybookError) as info:
        playbook_closure(playbook, **kwargs)  # type: ignore[arg-type]
    return info.value


# --------------------------------------------------------------------------- closures


def test_role_with_templates_files_and_lookups() -> None:
    closure, root = closure_of("roles_templates")
    assert rel(closure, root) == {
        "site.yml",
        "roles/web/tasks/main.yml",
        "roles/web/handlers/main.yml",
        "roles/web/meta/main.yml",
        "roles/web/defaults/main.yml",
        "roles/web/templates/nginx.conf.j2",
        "roles/web/templates/compose.yml",  # a Jinja template: in, but never parsed
        "roles/web/files/motd",
        "roles/web/files/setup.sh",
        "roles/web/files/app.tar.gz",
        "roles/web/files/site/index.html",
        "templates/banner.j2",  # the playbook folder's templates/ is the fallback
        "files/keys/admin.pub",  # lookup('file', ...)
    }
    assert closure.warnings == ()
    assert closure.playbook == root / "site.yml"
    assert all(p.is_absolute() and p.is_file() for p in closure.files)


def test_unrelated_files_are_not_in_the_closure() -> None:
    closure, root = closure_of("roles_templates")
    files = rel(closure, root)
    for path in ("unrelated.txt", "templates/unused.j2", "roles/unused/tasks/main.yml",
                 "files/keys/other.pub"):
        assert (root / path).is_file()
        assert path not in files


def test_role_meta_dependencies_are_followed_recursively() -> None:
    closure, root = closure_of("meta_deps")
    assert rel(closure, root) == {
        "site.yml",
        "roles/app/meta/main.yml",
        "roles/app/tasks/main.yml",
        "roles/common/meta/main.yml",
        "roles/common/tasks/main.yml",
        "roles/base/meta/main.yml",
        "roles/base/tasks/main.yml",
        "roles/base/defaults/main.yml",
        "roles/leaf/tasks/main.yml",
        # a nested role path; its dependency is found beside it
        "roles/stack/lib/meta/main.yml",
        "roles/stack/lib/tasks/main.yml",
        "roles/stack/helper/tasks/main.yml",
    }


def test_import_playbook_resolves_relative_to_the_importing_playbook() -> None:
    closure, root = closure_of("import_playbook")
    assert rel(closure, root) == {
        "site.yml",
        "playbooks/db.yml",
        "playbooks/web.yml",
        "playbooks/tasks/db_setup.yml",
        "playbooks/templates/my.cnf.j2",
        "playbooks/tasks/web.yml",
        "playbooks/roles/nginx/tasks/main.yml",
        "playbooks/group_vars/all.yml",
    }


def test_vars_files_and_include_vars() -> None:
    closure, root = closure_of("vars")
    assert rel(closure, root) == {
        "site.yml",
        "vars/common.yml",
        "vars/default_os.yml",  # first existing alternative
        "vars/extra.yml",
        "vars/secrets.yml",  # found in vars/ like Ansible's include_vars
        "vars/conf.d/a.yml",
        "vars/conf.d/b.yml",
    }


def test_vault_and_unsafe_tags_load() -> None:
    play = load_yaml(FIXTURES / "vars" / "site.yml")[0]
    password = play["vars"]["db_password"]
    assert isinstance(password, str)
    assert password.startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert play["vars"]["raw_text"] == "{{ not templated }}"
    assert play["vars"]["raw_list"] == ["{{ a }}", "{{ b }}"]
    secrets = load_yaml(FIXTURES / "vars" / "vars" / "secrets.yml")
    assert secrets["api_token"].startswith("$ANSIBLE_VAULT")


def test_include_role_import_role_and_nested_role_names() -> None:
    closure, root = closure_of("include_role")
    assert rel(closure, root) == {
        "site.yml",
        "roles/container-engine/containerd/tasks/main.yml",
        "roles/container-engine/containerd/templates/config.toml.j2",
        "roles/users/tasks/main.yml",
        "roles/ssh/tasks/main.yml",
        "roles/ssh/tasks/hardening.yml",
        "roles/ssh/tasks/sshd.yml",
        "roles/ssh/templates/sshd_config.j2",
        "roles/monitoring/tasks/main.yml",
        "roles/monitoring/handlers/main.yml",
        "roles/monitoring/handlers/restart.yml",
    }
    assert "roles/container-engine/runc/tasks/main.yml" not in rel(closure, root)


def test_roles_path_from_ansible_cfg_and_arguments() -> None:
    root = (FIXTURES / "cfg_roles").absolute()
    closure = playbook_closure(root / "play" / "site.yml", roles_path=[root / "arg_roles"])
    assert rel(closure, root) == {
        "play/site.yml",
        "play/ansible.cfg",
        "shared_roles/shared_role/tasks/main.yml",  # ../shared_roles, relative to the cfg
        "play/extra_roles/extra_role/tasks/main.yml",
        "arg_roles/argrole/tasks/main.yml",
        "arg_roles/dup/tasks/main.yml",  # arguments come before the cfg's roles_path
    }


def test_explicit_ansible_cfg_replaces_the_one_beside_the_playbook() -> None:
    root = (FIXTURES / "cfg_roles").absolute()
    closure = playbook_closure(root / "play" / "site.yml", ansible_cfg=root / "alt.cfg")
    assert rel(closure, root) == {
        "play/site.yml",
        "alt.cfg",
        "shared_roles/shared_role/tasks/main.yml",
        "shared_roles/dup/tasks/main.yml",  # shared_roles comes first in alt.cfg
        "play/extra_roles/extra_role/tasks/main.yml",
        "arg_roles/argrole/tasks/main.yml",
    }


def test_playbook_roles_folder_wins_over_roles_path(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "cfg_roles", tmp_path, dirs_exist_ok=True)
    local = tmp_path / "play" / "roles" / "dup" / "tasks"
    local.mkdir(parents=True)
    (local / "main.yml").write_text("- debug: msg=local dup\n")
    closure = playbook_closure(tmp_path / "play" / "site.yml", roles_path=[tmp_path / "arg_roles"])
    files = rel(closure, tmp_path)
    assert "play/roles/dup/tasks/main.yml" in files
    assert not {"arg_roles/dup/tasks/main.yml", "shared_roles/dup/tasks/main.yml"} & files


def test_blocks_fqcn_action_and_all_task_sections() -> None:
    closure, root = closure_of("blocks")
    assert rel(closure, root) == {
        "site.yml",
        "tasks/pre.yml",
        "tasks/main_work.yml",
        "tasks/nested/deeper.yml",  # relative to the including task file
        "tasks/recover.yml",
        "tasks/post.yml",
        "tasks/restart.yml",
        "templates/report.j2",
        "templates/local.j2",
        "files/hello.txt",
    }


def test_jinja_paths_depend_on_their_folder_with_one_warning_each() -> None:
    closure, root = closure_of("jinja")
    assert rel(closure, root) == {
        "site.yml",
        "vars/dev.yml",
        "vars/prod.yml",
        "tasks/Debian.yml",
        "tasks/RedHat.yml",
        "files/static.txt",  # {{ playbook_dir }} is known statically
        "roles/app/tasks/main.yml",
        "roles/app/tasks/Debian.yml",
        "roles/app/tasks/os/Ubuntu.yml",
        "roles/app/templates/a.j2",
        "roles/app/templates/b.j2",
    }
    assert len(closure.warnings) == 5
    role_tasks = root / "roles" / "app" / "tasks" / "main.yml"
    expected = [  # file:line of the task (or the play's key), the path, what is tracked instead
        f"{root / 'site.yml'}:3: vars_files 'vars/{{{{ env }}}}.yml' is dynamic; tracking every file in vars/",
        f"{root / 'site.yml'}:7: include_tasks 'tasks/{{{{ ansible_os_family }}}}.yml' is dynamic; "
        "tracking every file in tasks/",
        f"{role_tasks}:1: include_tasks '{{{{ ansible_os_family }}}}.yml' is dynamic; "
        "tracking every file in roles/app/tasks/",
        f"{role_tasks}:4: template src '{{{{ item }}}}.j2' is dynamic; tracking every file in roles/app/templates/",
        f"{role_tasks}:8: include_tasks 'os/{{{{ ansible_distribution }}}}.yml' is dynamic; "
        "tracking every file in roles/app/tasks/os/",
    ]
    assert sorted(closure.warnings) == sorted(expected)


def test_jinja_path_at_the_playbook_folder_takes_only_its_top_level_files(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks:\n    - include_tasks: \"{{ os }}.yml\"\n")
    (tmp_path / "Debian.yml").write_text("- debug: msg=debian\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "image.qcow2").write_text("not a dependency\n")
    closure = playbook_closure(tmp_path / "site.yml")
    assert rel(closure, tmp_path) == {"site.yml", "Debian.yml"}
    assert closure.warnings == (f"{tmp_path / 'site.yml'}:3: include_tasks '{{{{ os }}}}.yml' is dynamic; "
                                "tracking the files directly in the playbook's folder",)


def test_group_vars_host_vars_and_ansible_cfg_beside_the_playbook() -> None:
    closure, root = closure_of("group_vars")
    assert rel(closure, root) == {
        "site.yml",
        "ansible.cfg",
        "group_vars/all.yml",
        "group_vars/web/main.yml",
        "group_vars/web/vault.yml",
        "host_vars/h1.yml",
    }


def test_include_cycles_terminate() -> None:
    closure, root = closure_of("cycle")
    assert rel(closure, root) == {"site.yml", "tasks/a.yml", "tasks/b.yml"}


def test_folder_dependencies_skip_caches_and_dot_files(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "roles_templates", tmp_path, dirs_exist_ok=True)
    role = tmp_path / "roles" / "web"
    (role / ".DS_Store").write_text("x")
    (role / "files" / "site.retry").write_text("x")
    (role / "library" / "__pycache__").mkdir(parents=True)
    (role / "library" / "__pycache__" / "mod.cpython-311.pyc").write_text("x")
    (role / "library" / "old.pyc").write_text("x")
    (role / "library" / "mod.py").write_text("# module\n")
    (role / ".git").mkdir()
    (role / ".git" / "HEAD").write_text("x")
    files = rel(playbook_closure(tmp_path / "site.yml"), tmp_path)
    assert "roles/web/library/mod.py" in files
    assert not {f for f in files if "__pycache__" in f or f.endswith((".pyc", ".retry"))
                or "/." in f}


def test_remote_sources_are_not_dependencies() -> None:
    # roles_templates uses remote_src for /tmp/not-here.tar.gz and /etc/hosts: no error.
    closure, _ = closure_of("roles_templates")
    assert Path("/etc/hosts") not in closure.files


# --------------------------------------------------------------------------- errors

ERRORS = (FIXTURES / "errors").absolute()


@pytest.mark.parametrize(("playbook", "message"), [
    ("missing_include.yml", "include_tasks 'nope.yml' not found"),
    ("missing_import_tasks.yml", "import_tasks 'tasks/nope.yml' not found"),
    ("missing_import_playbook.yml", "import_playbook 'nope.yml' not found"),
    ("missing_vars_files.yml", "vars_files 'vars/nope.yml' not found"),
    ("missing_template.yml", "template src 'nope.j2' not found"),
    ("missing_copy.yml", "copy src 'nope.txt' not found"),
    ("missing_include_vars.yml", "include_vars 'nope.yml' not found"),
    ("not_a_list.yml", "a playbook must be a list of plays"),
    ("empty_playbook.yml", "a playbook must contain at least one play"),
])
def test_errors_in_the_playbook_name_it(playbook: str, message: str) -> None:
    err = error_of(ERRORS / playbook)
    assert err.message == message
    assert err.file == str(ERRORS / playbook)
    assert str(err).startswith(f"{ERRORS / playbook}: {message} (fix: ")


def test_missing_playbook() -> None:
    err = error_of(ERRORS / "no_such_playbook.yml")
    assert err.message == "playbook not found"
    assert err.file == str(ERRORS / "no_such_playbook.yml")
    assert err.hint


def test_invalid_yaml_reports_line_and_column() -> None:
    err = error_of(ERRORS / "bad_yaml.yml")
    assert err.file == str(ERRORS / "bad_yaml.yml")
    # libyaml and the pure-Python parser word the problem slightly differently
    assert err.message.startswith("invalid YAML: mapping values are not allowed")
    assert err.message.endswith(" at line 3 column 14")
    assert err.hint == "fix the YAML syntax"


def test_invalid_yaml_in_an_included_task_file_names_that_file() -> None:
    err = error_of(ERRORS / "bad_task_file.yml")
    assert err.file == str(ERRORS / "tasks" / "broken.yml")
    assert err.message.startswith("invalid YAML: ")
    assert err.message.endswith(" at line 3 column 3")


def test_missing_role() -> None:
    err = error_of(ERRORS / "missing_role.yml")
    assert err.file == str(ERRORS / "missing_role.yml")
    assert err.message == f"role 'ghost' not found (looked in: {ERRORS / 'roles'}, {ERRORS})"
    assert err.hint == "add it under roles/ or set roles_path in ansible.cfg"
    assert str(err).startswith(f"{ERRORS / 'missing_role.yml'}: role 'ghost' not found")


def test_galaxy_roles_must_be_installed_in_the_project() -> None:
    err = error_of(ERRORS / "galaxy_role.yml")
    assert err.file == str(ERRORS / "galaxy_role.yml")
    assert err.message == f"role 'geerlingguy.docker' not found (looked in: {ERRORS / 'roles'}, {ERRORS})"
    assert err.hint == "install it with ansible-galaxy into a roles path in the project"


def test_collection_roles_name_where_they_were_looked_for(tmp_path: Path) -> None:
    err = error_of(ERRORS / "collection_role.yml", env={"HOME": str(tmp_path)})
    assert err.file == str(ERRORS / "collection_role.yml")
    assert err.message == ("role 'community.general.thing' not found: collection community.general is not "
                           f"installed (looked in: {ERRORS / 'collections'}, {tmp_path / '.ansible' / 'collections'}, "
                           "/usr/share/ansible/collections)")
    assert err.hint == f"install it with 'ansible-galaxy collection install -p {ERRORS / 'collections'} community.general'"
    assert "\n" not in str(err)


def test_missing_meta_dependency_names_the_meta_file() -> None:
    err = error_of(ERRORS / "missing_meta_role.yml")
    assert err.file == str(ERRORS / "roles" / "needs_ghost" / "meta" / "main.yml")
    assert err.message.startswith("role 'ghost' not found (looked in: ")


def test_missing_role_template_names_the_role_task_file() -> None:
    err = error_of(ERRORS / "missing_role_template.yml")
    assert err.file == str(ERRORS / "roles" / "broken_src" / "tasks" / "main.yml")
    assert err.message == "template src 'nope.j2' not found"
    assert str(ERRORS / "roles" / "broken_src" / "templates" / "nope.j2") in (err.hint or "")


def test_missing_tasks_from() -> None:
    err = error_of(ERRORS / "missing_tasks_from.yml")
    assert err.file == str(ERRORS / "missing_tasks_from.yml")
    assert err.message == "tasks_from 'nope' not found in role 'plain'"


def test_missing_explicit_ansible_cfg() -> None:
    err = error_of(ERRORS / "missing_role.yml", ansible_cfg=ERRORS / "nope.cfg")
    assert err.file == str(ERRORS / "nope.cfg")
    assert err.message == "ansible.cfg not found"


def test_invalid_ansible_cfg(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "ansible.cfg").write_text("roles_path = roles\n")  # no section header
    err = error_of(tmp_path / "site.yml")
    assert err.file == str(tmp_path / "ansible.cfg")
    assert err.message.startswith("invalid ansible.cfg: ")


def test_load_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(PlaybookError) as info:
        load_yaml(bad)
    assert info.value.file == str(bad)
    assert info.value.message.startswith("invalid YAML: ")
    with pytest.raises(PlaybookError) as info:
        load_yaml(tmp_path / "missing.yml")
    assert info.value.file == str(tmp_path / "missing.yml")
