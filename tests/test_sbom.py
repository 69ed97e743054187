"""The SBOM: valid CycloneDX, every package with its package URL, the stage chain with its keys,
the tools, and the provenance (git commit, dirty tree, build host) it shares with the manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cyclonedx.validation.json import JsonStrictValidator

from conftest import fake_packer_env, run_doit
from vaultdoit import provenance, sbom

DEBS = {"base-files": "12.4+deb12u5", "openssh-server": "1:9.2p1-2+deb12u3", "libc6": "2.36-9+deb12u7"}
WHEELS = {"prometheus_client": "0.26.0", "packaging": "24.1", "Zope.Interface": "6.4"}


def manifest(**extra: object) -> dict:
    stage = {"name": "base", "kind": "mmdebstrap", "parent": None, "image": "build/stages/base/base.qcow2",
             "image_sha256": "sha256:" + "a" * 64, "input_digest": "b" * 64, "settings_digest": "c" * 64,
             "inputs": {"packer/base/packages.txt": "d" * 64}, "tools": {"mmdebstrap": "1.3", "qcow2": "1.1"},
             "built_at": "2026-11-28T16:40:00Z", "build_seconds": 120.5}
    top = {**stage, "name": "final", "kind": "packer", "parent": "base", "input_digest": "e" * 64,
           "inputs": {"ansible/final.yml": "f" * 64}, "tools": {"packer": "1.6"}}
    data = {
        "schema": "vaultdoit.manifest/1",
        "image": {"name": "vault-mini.qcow2", "bytes": 1234, "sha256": "9" * 64, "compression": "zstd"},
        "stages": [stage, top],
        "tools": {"vaultdoit": "0.1.0", "packer": "1.6.6", "qemu-img": "7.2.22"},
        "contents": {"debian_packages": DEBS, "python_packages": WHEELS},
        "provenance": {"git": {"commit": "0123abcd" * 5, "dirty": True, "changes": 1, "changed": ["vault.toml"]},
                       "build_host": {"os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0", "machine": "x86_64",
                                      "packages": {"mmdebstrap": "1.3.5-7", "packer": "1.6.6+ds2-1+b1"}}},
    }
    data.update(extra)
    return data


OS_RELEASE = {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}


def document(data: dict, **kw: object) -> dict:
    text = sbom.dump(sbom.build(data, timestamp=datetime(2026, 11, 28, tzinfo=timezone.utc), **kw))
    assert JsonStrictValidator(sbom.SPEC).validate_str(text) is None
    return json.loads(text)


def by_ref(doc: dict) -> dict[str, dict]:
    return {c["bom-ref"]: c for c in sbom._walk(doc["components"])}


def test_every_package_with_version_and_package_url():
    doc = document(manifest(), files={"vault-mini.vmlinuz": "1" * 64}, os_release=OS_RELEASE)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert sbom.packages(doc, "deb") == DEBS
    assert sbom.packages(doc, "pypi") == WHEELS
    refs = by_ref(doc)
    assert "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?distro=debian-12" in refs
    assert "pkg:pypi/zope-interface@6.4" in refs and "pkg:pypi/prometheus-client@0.26.0" in refs
    # The distribution holds its packages; the image holds the distribution, Python packages, kernel, top stage.
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert refs["os"]["type"] == "operating-system" and (refs["os"]["name"], refs["os"]["version"]) == ("debian", "12")
    assert deps["os"] == {c["bom-ref"] for c in refs.values() if c.get("purl", "").startswith("pkg:deb/")}
    assert {"os", "file:vault-mini.vmlinuz", "stage:final", "pkg:pypi/packaging@24.1"} <= deps["image"]
    assert deps["stage:final"] == {"stage:base"}
    # The image it describes, by digest.
    subject = doc["metadata"]["component"]
    assert subject["name"] == "vault-mini.qcow2" and sbom.image_digest(doc) == "9" * 64
    assert refs["file:vault-mini.vmlinuz"]["hashes"] == [{"alg": "SHA-256", "content": "1" * 64}]


def test_stage_chain_with_keys_inputs_and_the_tools_that_built_it():
    doc = document(manifest(), os_release=OS_RELEASE)
    refs = by_ref(doc)
    base = refs["stage:base"]
    props = {p["name"]: p["value"] for p in base["properties"]}
    assert base["version"] == "b" * 64 and props["vaultdoit:stage:key"] == "b" * 64
    assert props["vaultdoit:stage:kind"] == "mmdebstrap" and props["vaultdoit:stage:tool:mmdebstrap"] == "1.3"
    assert base["hashes"] == [{"alg": "SHA-256", "content": "a" * 64}]
    assert refs["stage:base:input:packer/base/packages.txt"]["hashes"][0]["content"] == "d" * 64
    assert {p["value"] for p in refs["stage:final"]["properties"] if p["name"] == "vaultdoit:stage:parent"} == {"base"}
    tools = {t["name"]: t["version"] for t in doc["metadata"]["tools"]["components"]}
    assert tools["packer"] == "1.6.6" and tools["qemu-img"] == "7.2.22" and tools["mmdebstrap"] == "1.3.5-7"
    meta = {p["name"]: p["value"] for p in doc["metadata"]["properties"]}
    assert meta["vaultdoit:git:commit"] == "0123abcd" * 5 and meta["vaultdoit:git:dirty"] == "true"
    assert meta["vaultdoit:build_host:os"] == "Debian GNU/Linux 12 (bookworm)"


def test_distribution_from_the_image_else_guessed():
    ubuntu = {**DEBS, "base-files": "13ubuntu10"}
    doc = document(manifest(contents={"debian_packages": ubuntu, "python_packages": {}}))
    assert any(c.get("purl", "").startswith("pkg:deb/ubuntu/base-files@13ubuntu10") for c in doc["components"])
    doc = document(manifest(), os_release={"ID": "ubuntu", "VERSION_ID": "24.04"})
    assert "pkg:deb/ubuntu/libc6@2.36-9%2Bdeb12u7?distro=ubuntu-24.04" in by_ref(doc)
    # Without a git checkout the SBOM says so.
    data = manifest()
    data["provenance"]["git"] = {"commit": None, "dirty": None, "reason": "not a git checkout"}
    meta = {p["name"]: p["value"] for p in document(data)["metadata"]["properties"]}
    assert meta["vaultdoit:git:commit"] == "none" and meta["vaultdoit:git:reason"] == "not a git checkout"


def test_same_image_same_serial_number():
    a, b = document(manifest()), document(manifest())
    assert a["serialNumber"] == b["serialNumber"]
    assert document(manifest(image={"name": "x", "sha256": "8" * 64}))["serialNumber"] != a["serialNumber"]


# --- from a build ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_build_writes_a_valid_sbom_whose_packages_are_the_reported_ones(project_copy, tmp_path: Path):
    root = project_copy("team")
    reports = root / "build/reports"
    reports.mkdir(parents=True)
    (reports / "dpkg-packages.txt").write_text("".join(f"{n}\t{v}\n" for n, v in DEBS.items()))
    (reports / "pip-freeze.txt").write_text("".join(f"{n}=={v}\n" for n, v in WHEELS.items()))
    run_doit(root, "final_image", env=fake_packer_env(root, tmp_path / "work"))
    final = root / "build/final"
    text = (final / "team.qcow2.cdx.json").read_text()
    assert JsonStrictValidator(sbom.SPEC).validate_str(text) is None
    doc = json.loads(text)
    assert sbom.packages(doc, "deb") == DEBS and sbom.packages(doc, "pypi") == WHEELS
    built = json.loads((final / "team.qcow2.manifest.json").read_text())
    assert sbom.image_digest(doc) == built["image"]["sha256"]
    assert [c["name"] for c in doc["components"] if c["name"].startswith("stage:")] == \
        ["stage:base", "stage:mid", "stage:top"]
    keys = {c["name"]: c["version"] for c in doc["components"] if c["name"].startswith("stage:")}
    assert keys == {f"stage:{s['name']}": s["input_digest"] for s in built["stages"]}
    # The manifest carries the same provenance: no git here, and that is said.
    assert built["provenance"]["git"] == {"commit": None, "dirty": None, "reason": "not a git checkout"}
    assert built["stages"][0]["image_sha256"].startswith("sha256:")


# --- provenance -----------------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_and_dirty_tree(tmp_path: Path):
    root = tmp_path / "project"
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None, "reason": "not a git checkout"}
    root.mkdir()
    (root / "vault.toml").write_text("")
    git(root, "init", "-q")
    assert provenance.git_state(root)["reason"] == "the repository has no commit yet"
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    head = git(root, "rev-parse", "HEAD")
    assert provenance.git_state(root) == {"commit": head, "dirty": False, "changes": 0, "changed": []}
    # What the build writes does not make the tree dirty, even without a .gitignore.
    for folder in ("build", "cache"):
        (root / folder).mkdir()
        (root / folder / "x").write_text("x")
    assert provenance.git_state(root)["dirty"] is False
    (root / "vault.toml").write_text("profile = 'x'\n")
    (root / "new.yml").write_text("- hosts: all\n")
    state = provenance.git_state(root)
    assert state["commit"] == head and state["dirty"] is True and state["changed"] == ["new.yml", "vault.toml"]


def test_build_host_names_its_tools():
    host = provenance.build_host()
    assert host["kernel"] and host["machine"]
    if shutil.which("dpkg-query") and shutil.which("mmdebstrap"):
        assert "mmdebstrap" in host["packages"]
