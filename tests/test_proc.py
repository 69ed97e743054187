"""The one program runner: clear failures, missing tools, nothing left running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from vaultdoit import proc
from vaultdoit.errors import CommandFailed, ToolNotFound


def test_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(proc.sys, "executable", "/nonexistent/python")
    with pytest.raises(ToolNotFound) as info:
        proc.run(["packer", "version"])
    assert str(info.value) == "packer not found (fix: install packer)"
    with pytest.raises(ToolNotFound, match=r"qemu-img not found \(fix: install qemu-utils\)"):
        proc.find_tool("qemu-img")


def test_failure_shows_command_exit_code_and_log_tail(tmp_path: Path):
    log = tmp_path / "logs/x.log"
    with pytest.raises(CommandFailed) as info:
        proc.run(["sh", "-c", "for i in 1 2 3; do echo line$i; done; exit 3"], logfile=log)
    text = str(info.value)
    assert "command failed with exit code 3: sh -c" in text
    assert f"full log: {log}" in text
    assert text.rstrip().endswith("line1\nline2\nline3")
    assert info.value.returncode == 3
    assert log.read_text().startswith("+ sh -c")


def test_exit_127_and_signals_are_explained():
    assert proc.describe_exit(127) == "exit code 127 (command or interpreter not found)"
    assert proc.describe_exit(-9) == "killed by signal SIGKILL"


def test_capture_returns_stdout():
    assert proc.run(["sh", "-c", "echo hello"], capture=True) == "hello\n"


def test_interrupted_program_and_its_children_are_stopped(tmp_path: Path):
    marker = tmp_path / "children"
    script = f"sleep 300 & echo $! > {marker}; sleep 300"
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - start < 30
    child = int(marker.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    # Gone, or a zombie waiting for init to reap it: either way no longer running.
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_check_output_reports_failure_as_a_value():
    assert proc.check_output(["sh", "-c", "echo no; exit 4"]) == (4, "no\n")


def test_watch_stops_a_program_that_stalls(tmp_path):
    """A watchdog answer stops the program (and its group) and names the reason."""
    from vaultdoit.errors import Stalled

    calls = []

    def watch():
        calls.append(1)
        return "no progress for 2 checks" if len(calls) >= 2 else None

    start = time.monotonic()
    with pytest.raises(Stalled, match="no progress for 2 checks"):
        proc.run(["sleep", "30"], logfile=tmp_path / "log", echo=True, watch=watch, watch_interval=0.1)
    assert time.monotonic() - start < 10
    assert "[vaultdoit] stopped sleep 30" in (tmp_path / "log").read_text()


def test_watch_silent_program_finishes_normally(tmp_path):
    out = proc.run(["sh", "-c", "echo hi; sleep 0.3; echo bye"], logfile=tmp_path / "log", echo=True,
                   watch=lambda: None, watch_interval=0.05)
    assert out == ""
    assert "hi\nbye\n" in (tmp_path / "log").read_text()
