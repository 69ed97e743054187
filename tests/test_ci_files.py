"""The CI files under ci/: valid against their published schemas (offline), and doing what the README says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, VENV_BIN

CHECK = VENV_BIN / "check-jsonschema"
FILES = {"github-actions.yml": "vendor.github-workflows", "gitlab-ci.yml": "vendor.gitlab-ci"}

pytestmark = pytest.mark.skipif(not CHECK.exists(), reason="needs check-jsonschema (pip install -e .[test])")


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    # --builtin-schema: the schemas check-jsonschema ships, so no network is needed.
    return subprocess.run([str(CHECK), "--builtin-schema", schema, str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(FILES))
def test_ci_file_is_valid_against_its_published_schema(name: str):
    result = validate(REPO / "ci" / name, FILES[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_mistakes(tmp_path: Path):
    # A job named like a reserved keyword, and a step without uses/run: both invalid.
    gitlab = tmp_path / "gitlab-ci.yml"
    gitlab.write_text((REPO / "ci/gitlab-ci.yml").read_text().replace("vault-image:", "image:"))
    assert validate(gitlab, FILES["gitlab-ci.yml"]).returncode == 1
    github = tmp_path / "github.yml"
    github.write_text((REPO / "ci/github-actions.yml").read_text().replace("- uses: actions/checkout@v4",
                                                                          "- name: nothing to do"))
    assert validate(github, FILES["github-actions.yml"]).returncode == 1


def test_ci_files_restore_build_push_and_keep_what_the_readme_says():
    for name in FILES:
        text = (REPO / "ci" / name).read_text()
        for needed in ("cache import", "cache export", "cache push", "final_image verify",
                       "VAULTDOIT_REMOTE_CACHE", "VAULTDOIT_BUILD_KEY", "build/final/", "build/reports/"):
            assert needed in text, (name, needed)
    # A job per image: every variant vault.toml declares for the profile, passed to doit.
    from vaultdoit import config_file

    variants = [v.name for v in config_file.load(REPO, "mini").variants]
    assert variants == ["demo", "production"]
    github = yaml.safe_load((REPO / "ci/github-actions.yml").read_text())
    assert github["jobs"]["image"]["strategy"]["matrix"]["include"] == [
        {"profile": "mini", "variant": v} for v in variants]
    gitlab = yaml.safe_load((REPO / "ci/gitlab-ci.yml").read_text())
    assert gitlab["vault-image"]["parallel"]["matrix"] == [{"PROFILE": ["mini"], "VARIANT": variants}]
    assert 'variant="${{ matrix.variant }}"' in (REPO / "ci/github-actions.yml").read_text()
    assert 'variant="$VARIANT"' in (REPO / "ci/gitlab-ci.yml").read_text()
    # The run's report and JUnit files: kept, and shown as test results where the CI system can.
    assert "build/$PROFILE/reports/runs/latest.junit.xml" in gitlab["vault-image"]["artifacts"]["reports"]["junit"]
    assert "build/${{ matrix.profile }}/reports/" in (REPO / "ci/github-actions.yml").read_text()
