"""JUnit XML of verify's checks and of a run's tasks, checked against the shape CI systems read.

The runs use the fake packer and the fake guest (tests/fakes/guest): a QEMU that answers QMP and
an SSH banner, an ssh that answers the boot test's questions. Real boots are in test_vm.py and
test_e2e.py.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import fake_packer_env, guest_env, run_doit
from vaultdoit import junit

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

SUITE_ATTRS = {"name", "tests", "failures", "errors", "skipped", "time", "timestamp"}
OUTCOMES = {"failure", "error", "skipped"}


def check_shape(path: Path) -> list[ET.Element]:
    """The common JUnit schema (the one Jenkins' and GitLab's readers accept): returns the test cases."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert suites and all(child.tag == "testsuite" for child in root)
    cases: list[ET.Element] = []
    for suite in suites:
        assert SUITE_ATTRS <= set(suite.attrib), suite.attrib
        mine = suite.findall("testcase")
        assert {c.tag for c in suite} <= {"testcase", "properties", "system-out", "system-err"}
        assert int(suite.get("tests", "-1")) == len(mine)
        for kind in ("failure", "error", "skipped"):
            assert int(suite.get(f"{kind}s" if kind != "skipped" else "skipped", "-1")) == \
                sum(c.find(kind) is not None for c in mine), kind
        assert abs(float(suite.get("time", "nan")) - sum(float(c.get("time", "0")) for c in mine)) < 0.01
        for case in mine:
            assert case.get("name") and case.get("classname") and float(case.get("time", "x")) >= 0
            outcomes = [child for child in case if child.tag in OUTCOMES]
            assert len(outcomes) <= 1
            assert {child.tag for child in case} <= OUTCOMES | {"system-out", "system-err"}
            for child in outcomes:
                assert child.get("message"), ET.tostring(child)
                assert "\n" not in child.get("message", "")
        cases += mine
    assert int(root.get("tests", "-1")) == len(cases)
    return cases


def test_team_project_builds_and_passes_its_boot_test_with_plain_doit(project_copy, tmp_path: Path):
    """No vault.toml, templates in packer/: `doit` (final_image and verify) makes the keys verify needs."""
    root = project_copy("team")
    result = run_doit(root, env=guest_env(root, tmp_path / "fake"))
    assert "boot test passed" in result.stderr, result.stderr
    assert "[6/6] verify: done" in result.stdout or "verify: done" in result.stdout
    assert "6 ran in " in result.stdout
    cases = check_shape(root / "build/reports/verify-team.junit.xml")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("verify.team", "boot to SSH login"), ("verify.team", "system running"), ("verify.team", "clean shutdown")]
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)
    # The run's tasks, for CI as well.
    tasks = check_shape(root / "build/reports/runs/latest.junit.xml")
    assert {c.get("name") for c in tasks} == {"keys", "stage:base", "stage:mid", "stage:top", "final_image",
                                               "verify"}
    html = (root / "build/reports/runs/latest.html").read_text()
    assert "PASS" in html and "system running" in html and "boot to SSH" in html


def test_an_image_that_does_not_boot_is_an_error_case(project_copy, tmp_path: Path):
    root = project_copy("team")
    # tests/fakes' QEMU exits at once: the image never boots.
    result = run_doit(root, env=fake_packer_env(root, tmp_path / "fake"), check=False)
    assert result.returncode == 1
    (case,) = check_shape(root / "build/reports/verify-team.junit.xml")
    error = case.find("error")
    assert case.get("name") == "boot to SSH login" and error is not None
    assert "QEMU exited" in error.get("message", "") and "QEMU exited" in (error.text or "")


def test_document_shapes_failures_errors_skips_and_odd_text(tmp_path: Path):
    cases = [junit.Case("ok", "c", 1.25, output="fine"),
             junit.Case("bad", "c", 0.5, "failure", "exit 1:\nline two \x1b[31mred\x1b[0m"),
             junit.Case("broken", "c", 0.0, "error", "x" * 900),
             junit.Case("later", "c", outcome="skipped", message="not run")]
    path = tmp_path / "j.xml"
    path.write_text(junit.document("suite <&>", cases, output="all output"))
    parsed = check_shape(path)
    assert [c.get("name") for c in parsed] == ["ok", "bad", "broken", "later"]
    failure = parsed[1].find("failure")
    assert failure is not None and failure.get("message") == "exit 1: | line two [31mred[0m"
    assert "line two" in (failure.text or "")
    error = parsed[2].find("error")
    assert error is not None and len(error.get("message", "")) == junit.MESSAGE_LIMIT
    assert ET.parse(path).getroot().get("name") == "suite <&>"
