"""The wheelhouse: pinned wheels downloaded with hashes, and a manifest of what is there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from conftest import REPO
from vaultdoit import actions


@pytest.mark.integration
def test_download_wheels_writes_a_verified_manifest(tmp_path: Path):
    dest = tmp_path / "wheels"
    result = actions.download_wheels(REPO / "python/requirements.txt", dest, dest / "manifest.json",
                                     tmp_path / "log")
    assert result is None
    manifest = json.loads((dest / "manifest.json").read_text())
    assert set(manifest["wheels"]) == {"prometheus_client-0.26.0-py3-none-any.whl", "packaging-26.4-py3-none-any.whl"}
    for name, digest in manifest["wheels"].items():
        assert digest == "sha256:" + hashlib.sha256((dest / name).read_bytes()).hexdigest()
    assert (dest / "requirements.txt").read_text() == (REPO / "python/requirements.txt").read_text()
    # A stage input: the same wherever the project lives.
    assert str(REPO) not in (dest / "manifest.json").read_text()
    assert manifest["requirements_sha256"] == \
        "sha256:" + hashlib.sha256((REPO / "python/requirements.txt").read_bytes()).hexdigest()


def test_a_wrong_hash_fails_the_task(tmp_path: Path):
    req = tmp_path / "requirements.txt"
    req.write_text("packaging==26.4 --hash=sha256:" + "0" * 64 + "\n")
    result = actions.download_wheels(req, tmp_path / "w", tmp_path / "w/manifest.json", tmp_path / "log")
    assert isinstance(result, TaskFailed)
    assert "pip download" in str(result) and not (tmp_path / "w/manifest.json").exists()
