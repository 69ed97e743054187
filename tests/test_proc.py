"""The one program runner: clear failures, missing tools, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaultdoit import proc
from vaultdoit.errors import CommandFailed, Stalled, ToolNotFound


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


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_interrupted_program_and_its_children_are_stopped(tmp_path: Path):
    marker = tmp_path / "children"
    # The background sleep ignores SIGINT (a non-interactive shell's async command).
    script = f"sleep 300 & echo $! > {marker}.tmp; mv {marker}.tmp {marker}; sleep 300"
    start = time.monotonic()
    with pytest.raises(Stalled):
        proc.run(["sh", "-c", script], watch=lambda: "stop" if marker.exists() else None, watch_interval=0.05)
    assert time.monotonic() - start < 30
    assert not alive(int(marker.read_text()))


def test_exit_codes_and_signals_pass_through_the_supervisor():
    with pytest.raises(CommandFailed) as info:
        proc.run(["sh", "-c", "kill -TERM $$"])
    assert info.value.returncode == -signal.SIGTERM
    assert "killed by signal SIGTERM" in str(info.value)
    assert proc.check_output(["sh", "-c", "exit 7"]) == (7, "")
    with proc.spawn(["sleep", "300"], logfile=Path("/dev/null")) as sleeper:
        assert sleeper.poll() is None
    assert sleeper.returncode == -signal.SIGINT  # spawn stops it with SIGINT, as before


def test_what_a_program_leaves_running_is_stopped_when_it_exits(tmp_path: Path):
    """A daemon of its own (new session, parent gone) is still ours: stopped with the program."""
    out = proc.run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"], capture=True)
    assert not alive(int(out))


def test_a_daemon_on_purpose_keeps_running(tmp_path: Path):
    out = proc.run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"], capture=True,
                   daemon=True)
    pid = int(out)
    try:
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_sigkill_of_vaultdoit_stops_the_whole_tree(tmp_path: Path):
    """Even a grandchild in another session dies when the process running proc.run is SIGKILLed."""
    pids = tmp_path / "pids"
    script = f"setsid sleep 300 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; sleep 300"
    runner = subprocess.Popen([sys.executable, "-c", f"from vaultdoit import proc; proc.run(['sh', '-c', {script!r}])"],
                              env={**os.environ, "PYTHONPATH": str(Path(proc.__file__).parent.parent)})
    try:
        wait_for(pids.exists, 30, "the program to start")
        shell, grandchild = (int(p) for p in pids.read_text().split())
        assert os.getsid(grandchild) != os.getsid(shell)
        runner.kill()
        runner.wait()
        # The guarantee is seconds (tests/test_faults.py holds it to 5 s in a real build);
        # here the bound only has to survive a heavily loaded host.
        wait_for(lambda: not alive(shell) and not alive(grandchild), 15, "the tree to be stopped")
    finally:
        runner.kill()
        runner.wait()


def _orphan(command: str, cwd: Path) -> int:
    """Start ``command`` detached (not our descendant, as a QEMU left by another run) and return its pid."""
    out = subprocess.run(["sh", "-c", f"setsid {command} >/dev/null 2>&1 & echo $!"], cwd=cwd,
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_processes_using_a_folder_are_found(tmp_path: Path):
    from vaultdoit.errors import Busy

    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "image").write_bytes(b"x")
    assert proc.users_of([folder]) == []
    proc.ensure_unused(folder, tmp_path / "missing")
    by_fd = _orphan("sleep 300 <stage/image", tmp_path)
    # Named on the command line, relative to its working folder (QEMU's -drive file=...).
    by_arg = _orphan("sh -c 'sleep 300; true' sh file=stage/image,if=virtio", tmp_path)
    try:
        # Until each has exec'd, a process shows the name of the shell that forked it.
        expected = sorted([(by_fd, "sleep"), (by_arg, "sh")])
        wait_for(lambda: proc.users_of([folder]) == expected, 10, "both processes to start")
        with pytest.raises(Busy) as info:
            proc.ensure_unused(folder)
        first, second = sorted([by_fd, by_arg])
        program = "sleep" if first == by_fd else "sh"
        assert str(info.value) == (f"{program} (pid {first}) still uses {folder}/ (so do 1 other process) "
                                   f"(fix: stop it, e.g. kill {first} {second})")
    finally:
        for pid in (by_fd, by_arg):
            os.killpg(pid, signal.SIGKILL)  # setsid made each the leader of its group
    wait_for(lambda: proc.users_of([folder]) == [], 10, "the processes to end")
    # Our own programs never count.
    with proc.spawn(["sh", "-c", "sleep 300 <image"], logfile=tmp_path / "log", cwd=folder):
        time.sleep(0.5)
        assert proc.users_of([folder]) == []


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
