"""The project's build lock: which commands take it, who holds it, and that the kernel frees it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vaultdoit import lock
from vaultdoit.errors import ConfigError, LockBusy

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from vaultdoit import lock
    held = lock.BuildLock(Path(sys.argv[1]))
    held.acquire("doit final_image")
    held.note("stage:final")
    print("ready", flush=True)
    sys.stdin.read()  # hold the lock until our stdin closes
""")


@pytest.fixture
def holder(tmp_path: Path):
    """Another process holding the lock of the project ``tmp_path`` while running stage:final."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(lock.__file__).parent.parent)})
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("args, command", [
    ([], "run"),
    (["final_image"], "run"),
    (["final_image", "verify", "profile=mini"], "run"),
    (["-n", "2", "-P", "thread", "final_image"], "run"),
    (["--continue", "final_image"], "run"),
    (["list"], "list"),
    (["list", "--all", "--status"], "list"),
    (["profile=mini", "list"], "list"),
    (["-f", "dodo.py", "info", "stage:base"], "info"),
    (["--dir", "project", "clean"], "clean"),
    (["-k", "forget", "stage:top"], "forget"),
    (["help", "run"], "help"),
    (["dumpdb"], "dumpdb"),
    (["explain", "stage:top"], "explain"),  # vaultdoit's doit commands
    (["status", "-q", "var.x=1"], "status"),
    (["tabcompletion"], "tabcompletion"),
    (["ignore", "verify"], "ignore"),
    (["reset-dep"], "reset-dep"),
    (["strace", "stage:base"], "strace"),
    (["auto"], "run"),  # not a core command of doit 0.37: doit runs a task of that name
    (["-n", "2", "list"], "run"),  # doit too: an option of run first means run
])
def test_the_command_is_read_as_doit_reads_it(args, command):
    assert lock.doit_command(args) == command


def test_only_commands_that_change_the_build_take_the_lock():
    assert [c for c in ("list", "info", "help", "dumpdb", "tabcompletion", "explain", "status")
            if lock.takes_lock(c)] == []
    assert all(lock.takes_lock(c) for c in ("run", "clean", "forget", "ignore", "reset-dep", "strace", "auto"))


def test_mode_from_the_command_line_first_then_the_environment(monkeypatch):
    monkeypatch.delenv(lock.ENV, raising=False)
    assert lock.mode() == "wait"
    monkeypatch.setenv(lock.ENV, "fail")
    assert lock.mode() == "fail"
    assert lock.mode("wait") == "wait"
    with pytest.raises(ConfigError, match=r"^lock=later: must be wait or fail \(fix: lock=fail fails at once"):
        lock.mode("later")
    monkeypatch.setenv(lock.ENV, "never")
    with pytest.raises(ConfigError, match=r"^VAULTDOIT_LOCK=never: must be wait or fail"):
        lock.mode()


def test_fail_mode_names_the_holder(tmp_path, holder):
    with pytest.raises(LockBusy) as info:
        lock.BuildLock(tmp_path).acquire("doit final_image", wait=False)
    assert re.fullmatch(
        rf"{tmp_path}/build/\.vaultdoit\.lock: another build holds the lock: pid {holder.pid} \(doit final_image\), "
        r"running stage:final since \d\d:\d\d:\d\d \(fix: wait for it to finish, or drop lock=fail / "
        r"VAULTDOIT_LOCK=fail to wait\)", str(info.value)), str(info.value)


def test_waiting_says_who_once_then_takes_over(tmp_path, holder):
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        holder.stdin.close()  # the holder finishes once we wait

    second = lock.BuildLock(tmp_path)
    second.acquire("doit verify", say=say)
    try:
        assert len(said) == 1
        assert f"is held by pid {holder.pid} (doit final_image), running stage:final since" in said[0]
        assert said[0].endswith("; waiting for it to finish")
        assert holder.wait(10) == 0
        second.note("verify")
        assert f"pid {os.getpid()} (doit verify), running verify since" in second.holder()
    finally:
        second.release()
    assert not second.info_path.exists()


def test_the_kernel_frees_the_lock_of_a_killed_holder(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lock.held(tmp_path, "vaultdoit test", lock_mode="fail") as taken:
        assert taken.held
        # Taking it again in the same process (the dodo file loaded twice) does not wait for ourselves.
        with lock.held(tmp_path, "vaultdoit again", lock_mode="fail"):
            pass
        assert taken.held
    assert not taken.held


def test_holder_without_a_record_is_found_in_proc_locks(tmp_path, holder):
    (tmp_path / "build" / lock.INFO_NAME).unlink()
    assert lock.BuildLock(tmp_path).holder().startswith(f"pid {holder.pid} ({sys.executable} -c")
