"""Builds as a normal user: a fake-packer build leaves only the user's files in the project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, fake_packer_env, not_owned_by
from vaultdoit import signing

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("qemu-img", "ssh-keygen")),
                                reason="needs qemu-img and ssh-keygen")


def test_a_build_as_a_normal_user_leaves_only_their_files(normal_user):
    home = normal_user.folder()
    try:
        root = home / "team"
        shutil.copytree(FIXTURES / "projects" / "team", root)
        env = fake_packer_env(root, home / "work")
        key = home / "keys" / "release_ed25519"
        key.parent.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        normal_user.own(home)
        env[signing.ENV] = str(key)
        who = normal_user.run(["id", "-u"], cwd=root)
        assert int(who.stdout) == normal_user.uid
        normal_user.run([str(normal_user.python_bin / "doit"), "final_image"], cwd=root, env=env)
        final = root / "build/final"
        assert (final / "team.qcow2").is_file() and (final / "team.qcow2.cdx.json.sig").is_file()
        checked = normal_user.run([str(normal_user.python_bin / "vaultdoit"), "verify-signature",
                                   str(final / "team.qcow2")], cwd=root, env=env)
        assert "good signature" in checked.stdout
        # build/ (images, logs, keys, doit's database) and everything else: the user's, none root's.
        assert (root / "build/.vaultdoit").is_dir() and (root / "build/logs").is_dir()
        assert not_owned_by(normal_user.uid, home) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
