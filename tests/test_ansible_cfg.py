"""The merged ansible.cfg: fact caching and pipelining on, the project's settings kept."""

from __future__ import annotations

import configparser
from pathlib import Path

from vaultdoit import ansible_cfg


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def test_defaults_without_a_project_cfg(tmp_path: Path):
    cfg = parse(ansible_cfg.render(None, tmp_path / "facts"))
    assert cfg["defaults"]["gathering"] == "smart"
    assert cfg["defaults"]["fact_caching"] == "jsonfile"
    assert cfg["defaults"]["fact_caching_connection"] == str(tmp_path / "facts")
    assert cfg["ssh_connection"]["pipelining"] == "True"


def test_project_settings_win_and_relative_paths_become_absolute(tmp_path: Path):
    user = tmp_path / "ansible" / "ansible.cfg"
    user.parent.mkdir()
    user.write_text("[defaults]\nroles_path = roles:/opt/roles\ngathering = explicit\nforks = 7\n"
                    "[ssh_connection]\nssh_args = -o ControlMaster=auto\n")
    target = ansible_cfg.write(user, tmp_path / "facts", tmp_path / "state" / "drivers.cfg")
    cfg = parse(target.read_text())
    assert cfg["defaults"]["roles_path"] == f"{tmp_path / 'ansible' / 'roles'}:/opt/roles"
    assert cfg["defaults"]["gathering"] == "explicit"
    assert cfg["defaults"]["forks"] == "7"
    assert cfg["defaults"]["fact_caching"] == "jsonfile"
    assert cfg["ssh_connection"]["ssh_args"] == "-o ControlMaster=auto"
    assert (tmp_path / "facts").is_dir()


def test_every_plugin_folder_setting_stays_relative_to_the_project_cfg(tmp_path: Path):
    user = tmp_path / "ansible" / "ansible.cfg"
    user.parent.mkdir()
    user.write_text("[defaults]\nlookup_plugins = plugins/lookup ; a comment\ntest_plugins = plugins/test\n"
                    "action_plugins = a:/opt/actions\ndoc_fragment_plugins = docs\n")
    cfg = parse(ansible_cfg.render(user, tmp_path / "facts"))
    assert cfg["defaults"]["lookup_plugins"] == str(tmp_path / "ansible" / "plugins" / "lookup")
    assert cfg["defaults"]["test_plugins"] == str(tmp_path / "ansible" / "plugins" / "test")
    assert cfg["defaults"]["action_plugins"] == f"{tmp_path / 'ansible' / 'a'}:/opt/actions"
    assert cfg["defaults"]["doc_fragment_plugins"] == str(tmp_path / "ansible" / "docs")
