"""Tests for vaultdoit.ansible_paths: ansible.cfg path settings, the environment, collection roots."""

from __future__ import annotations

from pathlib import Path

from vaultdoit.ansible_paths import AnsibleSettings, Collections, split_fqcr


def settings(tmp_path: Path, text: str | None, env: dict[str, str]) -> AnsibleSettings:
    cfg = None
    if text is not None:
        cfg = tmp_path / "ansible" / "ansible.cfg"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(text)
    return AnsibleSettings(cfg, env)


def test_cfg_paths_are_relative_to_the_cfg_and_expand_home_and_variables(tmp_path: Path) -> None:
    s = settings(tmp_path, "[defaults]\nroles_path = roles:~/shared:$TEAM/roles\n",
                 {"HOME": "/home/me", "TEAM": "/srv/team"})
    assert s.roles_path() == [tmp_path / "ansible" / "roles", Path("/home/me/shared"), Path("/srv/team/roles")]


def test_the_environment_wins_over_the_cfg(tmp_path: Path) -> None:
    s = settings(tmp_path, "[defaults]\ncollections_path = cols\nlibrary = lib\n",
                 {"ANSIBLE_COLLECTIONS_PATH": "/a:/b", "ANSIBLE_LIBRARY": "/mods"})
    assert s.collection_roots() == [Path("/a"), Path("/b")]
    assert Path("/mods") in s.plugin_folders()
    assert tmp_path / "ansible" / "lib" not in s.plugin_folders()
    assert s.configured_in_cfg() == []  # installing there would not help: the environment overrides it


def test_older_spellings_of_the_collections_setting(tmp_path: Path) -> None:
    s = settings(tmp_path, "[defaults]\ncollections_paths = old\n", {})
    assert s.collection_roots() == [tmp_path / "ansible" / "old"]
    assert s.configured_in_cfg() == [tmp_path / "ansible" / "old"]
    s = settings(tmp_path, None, {"ANSIBLE_COLLECTIONS_PATHS": "/legacy"})
    assert s.collection_roots() == [Path("/legacy")]


def test_default_collection_roots_follow_ansible_home(tmp_path: Path) -> None:
    assert settings(tmp_path, None, {"HOME": "/home/me"}).collection_roots() == [
        Path("/home/me/.ansible/collections"), Path("/usr/share/ansible/collections")]
    assert settings(tmp_path, None, {"ANSIBLE_HOME": "/opt/ansible"}).collection_roots()[0] == Path(
        "/opt/ansible/collections")


def test_a_root_may_be_named_with_its_ansible_collections_folder(tmp_path: Path) -> None:
    coll = tmp_path / "ansible_collections" / "ns" / "coll"
    coll.mkdir(parents=True)
    found = Collections([tmp_path / "ansible_collections"])
    assert found.find("ns.coll") == coll
    assert found.find("ns.other") is None


def test_playbook_collections_come_first(tmp_path: Path) -> None:
    for root in ("configured", "play/collections"):
        (tmp_path / root / "ansible_collections" / "ns" / "coll").mkdir(parents=True)
    found = Collections([tmp_path / "configured"])
    assert found.find("ns.coll") == tmp_path / "configured" / "ansible_collections" / "ns" / "coll"
    found.add_playbook_dir(tmp_path / "play")
    assert found.find("ns.coll") == tmp_path / "play" / "collections" / "ansible_collections" / "ns" / "coll"


def test_split_fqcr() -> None:
    assert split_fqcr("ns.coll.role") == ("ns.coll", "role")
    assert split_fqcr("ns.coll.sub.role") == ("ns.coll", "sub/role")
    assert split_fqcr("geerlingguy.docker") is None
    assert split_fqcr("my-org.coll.role") is None
