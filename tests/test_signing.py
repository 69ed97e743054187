"""Signed outputs: made by `doit final_image` with the user's key, checked with plain OpenSSH and
with `vaultdoit verify-signature`, rejected after any file was changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fake_packer_env, run_doit
from vaultdoit import signing

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("qemu-img", "ssh-keygen")),
                                reason="needs qemu-img and ssh-keygen")

PRINCIPAL = "release@example.com"


def keygen(path: Path, comment: str = PRINCIPAL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def allowed_signers(folder: Path, key: Path, principal: str = PRINCIPAL) -> Path:
    """What a customer writes from the publisher's public key."""
    path = folder / "allowed_signers"
    pub = key.with_name(key.name + ".pub").read_text().split()
    path.write_text(f'{principal} namespaces="vaultdoit" {pub[0]} {pub[1]}\n')
    return path


def write_reports(reports: Path) -> None:
    """What the final and frameworks stages fetch from a real image."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "dpkg-packages.txt").write_text("base-files\t12.4+deb12u5\nopenssh-server\t1:9.2p1-2+deb12u3\n")
    (reports / "pip-freeze.txt").write_text("prometheus_client==0.26.0\npackaging==24.1\n")
    (reports / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """The team fixture built with a fake packer and signed; (project, key, env)."""
    from conftest import FIXTURES

    tmp = tmp_path_factory.mktemp("signed")
    root = tmp / "team"
    shutil.copytree(FIXTURES / "projects" / "team", root)
    key = keygen(tmp / "keys" / "release_ed25519")
    env = fake_packer_env(root, tmp / "work")
    env[signing.ENV] = str(key)
    write_reports(root / "build" / "reports")
    run_doit(root, "final_image", env=env)
    return root, key, env


def verify(image: Path, signers: Path | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "vaultdoit", "verify-signature", str(image)]
    if signers is not None:
        args += ["--allowed-signers", str(signers)]
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd or image.parent,
                          env={**os.environ, **(env or {})})


def test_signed_outputs_check_with_plain_openssh_and_with_vaultdoit(signed, tmp_path: Path):
    root, key, env = signed
    final = root / "build/final"
    names = sorted(p.name for p in final.iterdir())
    assert names == ["team.qcow2", "team.qcow2.cdx.json", "team.qcow2.cdx.json.sig", "team.qcow2.manifest.json",
                     "team.qcow2.sha256", "team.qcow2.sha256.sig"]
    signers = allowed_signers(tmp_path, key)
    # What the docs tell a customer to run: OpenSSH and coreutils only.
    for name in ("team.qcow2.sha256", "team.qcow2.cdx.json"):
        with (final / name).open("rb") as message:
            good = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL, "-n", "vaultdoit",
                                   "-s", f"{name}.sig"], stdin=message, cwd=final, capture_output=True, text=True)
        assert good.returncode == 0 and f'Good "vaultdoit" signature for {PRINCIPAL}' in good.stdout + good.stderr
    assert subprocess.run(["sha256sum", "-c", "team.qcow2.sha256"], cwd=final, capture_output=True).returncode == 0

    result = verify(final / "team.qcow2", signers)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"team.qcow2: good signature by {PRINCIPAL} (ED25519 key SHA256:")
    assert len(result.stdout.splitlines()) == 1 and result.stderr == ""
    # In the project, the project's own key is trusted without an allowed-signers file.
    in_project = verify(final / "team.qcow2", cwd=root, env={**env, "PATH": "/usr/bin:/bin"})
    assert in_project.returncode == 0, in_project.stderr


def _tamper(final: Path, victim: str, key: Path) -> None:
    image = final / "team.qcow2"
    if victim == "image":
        with image.open("r+b") as fh:
            fh.seek(65536)
            byte = fh.read(1)
            fh.seek(65536)
            fh.write(bytes([byte[0] ^ 1]))
    elif victim == "checksum":
        path = final / "team.qcow2.sha256"
        path.write_text(path.read_text().replace("team.qcow2", "team.qcow2 ", 1))
    elif victim == "sbom":
        path = final / "team.qcow2.cdx.json"
        path.write_text(path.read_text().replace("openssh-server", "openssh-servex"))
    elif victim == "sbom signature":
        shutil.copyfile(final / "team.qcow2.sha256.sig", final / "team.qcow2.cdx.json.sig")
    elif victim == "missing signature":
        (final / "team.qcow2.sha256.sig").unlink()
    elif victim == "sbom of another image":
        # Validly signed by the publisher, but for another build: it must not vouch for this one.
        path = final / "team.qcow2.cdx.json"
        document = json.loads(path.read_text())
        document["metadata"]["component"]["hashes"][0]["content"] = "0" * 64
        path.write_text(json.dumps(document))
        signing.sign(path, key)
    else:
        raise AssertionError(victim)


@pytest.mark.parametrize(("victim", "file", "words"), [
    ("image", "team.qcow2", "does not match team.qcow2.sha256: changed since it was signed"),
    ("checksum", "team.qcow2.sha256", "does not match team.qcow2.sha256.sig: changed since it was signed"),
    ("sbom", "team.qcow2.cdx.json", "does not match team.qcow2.cdx.json.sig: changed since it was signed"),
    ("sbom signature", "team.qcow2.cdx.json", "does not match team.qcow2.cdx.json.sig"),
    ("missing signature", "team.qcow2.sha256", "not signed: team.qcow2.sha256.sig is missing"),
    ("sbom of another image", "team.qcow2.cdx.json", "describes another image than team.qcow2"),
])
def test_any_change_fails_the_check_in_one_line(signed, tmp_path: Path, victim: str, file: str, words: str):
    root, key, _ = signed
    final = tmp_path / "final"
    shutil.copytree(root / "build/final", final)
    signers = allowed_signers(tmp_path, key)
    assert verify(final / "team.qcow2", signers).returncode == 0
    _tamper(final, victim, key)
    result = verify(final / "team.qcow2", signers)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"vaultdoit: error: {final / file}: {words}"), result.stderr


def test_a_key_the_customer_does_not_trust_fails(signed, tmp_path: Path):
    root, _, _ = signed
    other = keygen(tmp_path / "other_ed25519", "someone@else")
    result = verify(root / "build/final/team.qcow2", allowed_signers(tmp_path, other, "someone@else"))
    assert result.returncode == 1
    assert "is not a signature by a key in" in result.stderr and len(result.stderr.splitlines()) == 1


def test_no_key_to_check_against_is_a_user_mistake(signed, tmp_path: Path):
    root, _, _ = signed
    final = tmp_path / "final"
    shutil.copytree(root / "build/final", final)
    result = verify(final / "team.qcow2", cwd=tmp_path)  # outside any project, no --allowed-signers
    assert result.returncode == 2
    assert "no key to check the signature against" in result.stderr and "--allowed-signers" in result.stderr


def test_signing_key_is_never_made_and_a_missing_one_is_one_line(project_copy, tmp_path: Path):
    root = project_copy("team")
    missing = tmp_path / "nokey"
    result = run_doit(root, "list", env={signing.ENV: str(missing)}, check=False)
    assert result.returncode == 2
    assert f"{signing.ENV}=\"{missing}\" does not exist" in result.stderr
    assert not missing.exists() and not missing.with_name("nokey.pub").exists()
    (root / "vault.toml").write_text('signing_key = "keys/release"\n')
    result = run_doit(root, "list", check=False)
    assert result.returncode == 2 and 'vault.toml:1: signing_key = "keys/release" does not exist' in result.stderr


def test_turning_signing_off_removes_the_old_signatures_and_another_key_signs_again(signed, tmp_path: Path):
    root, key, env = signed
    project = tmp_path / "team"
    shutil.copytree(root, project, symlinks=True)
    work = tmp_path / "work"
    plain = fake_packer_env(project, work)
    # Another key at another path: final_image runs again and signs with it.
    other = keygen(tmp_path / "k2" / "release_ed25519")
    run_doit(project, "final_image", env={**plain, signing.ENV: str(other)})
    assert verify(project / "build/final/team.qcow2", allowed_signers(tmp_path, other)).returncode == 0
    # No key: the image is published without signatures, none left from before.
    run_doit(project, "final_image", env=plain)
    assert not list((project / "build/final").glob("*.sig"))
    assert (project / "build/final/team.qcow2.cdx.json").is_file()


def test_a_key_with_a_passphrase_says_how_to_sign(project_copy, tmp_path: Path):
    root = project_copy("team")
    key = tmp_path / "locked_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True)
    env = fake_packer_env(root, tmp_path / "work")
    result = run_doit(root, "final_image", env={**env, signing.ENV: str(key)}, check=False)
    assert result.returncode != 0
    assert "cannot sign with this key" in result.stdout + result.stderr
    assert "ssh-agent" in result.stdout + result.stderr
    assert not (root / "build/final/team.qcow2").exists()  # nothing published unsigned
