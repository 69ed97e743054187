"""Faults that happen in real teams, each reproduced against real doit runs (issue 9).

The fake packer (tests/fakes/packer) is made slow, or leaves a grandchild in
a session of its own as Packer's QEMU may, so that a second build, a kill or
a Ctrl-C lands in the middle of a stage. Each case asserts the exit code,
the one-line message, no traceback, the previous images unchanged and no
process left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import VENV_BIN, ran_tasks, run_doit

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

STAGES = ("base", "mid", "top")


# --- helpers -----------------------------------------------------------------


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[1])


class Doit:
    """A doit run in the background, its output in files (no pipe to fill up)."""

    def __init__(self, root: Path, env: dict[str, str], *args: str, name: str) -> None:
        self.out = root.parent / f"{name}.out"
        self.err = root.parent / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([str(VENV_BIN / "doit"), *args], cwd=root, env={**os.environ, **env},
                                         stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def runs():
    """Background doit runs, killed at the end of the test whatever happened."""
    started: list[Doit] = []

    def start(root: Path, env: dict[str, str], *args: str) -> Doit:
        run = Doit(root, env, *args, name=f"run{len(started)}")
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def built(log: Path) -> list[str]:
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def images(root: Path) -> dict[str, bytes]:
    """Every image of the build, by name: stages and final."""
    found = {n: (root / f"build/stages/{n}/{n}.qcow2").read_bytes() for n in STAGES}
    found["final"] = (root / "build/final/team.qcow2").read_bytes()
    return found


def build_then_change_top(root: Path, env: dict[str, str], log: Path) -> dict[str, bytes]:
    """A complete build, then an edit that only stage:top uses; returns the images before the edit."""
    run_doit(root, "final_image", env=env)
    built(log)
    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed\n")
    return images(root)


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def message_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("vaultdoit: ")]


def slow(env: dict[str, str], ready: Path, seconds: int = 300, **more: str) -> dict[str, str]:
    return {**env, "FAKE_PACKER_SLEEP": str(seconds), "FAKE_PACKER_READY": str(ready), **more}


# --- one build at a time -------------------------------------------------------


def test_second_build_waits_for_the_first_then_finds_everything_up_to_date(team, runs, tmp_path):
    root, env, log = team
    build_then_change_top(root, env, log)
    ready, release = tmp_path / "ready", tmp_path / "release"
    # The first run with parallel threads: the lock is the process's, not a thread's.
    first = runs(root, slow(env, ready, FAKE_PACKER_RELEASE=str(release)), "-n", "2", "-P", "thread",
                 "--reporter=json", "final_image")
    wait_for(ready.exists, 60, "the first build to be inside stage:top")
    second = runs(root, env, "--reporter=json", "final_image")
    wait_for(lambda: "waiting for it to finish" in second.stderr(), 60, "the second build to wait")
    assert first.proc.poll() is None and second.proc.poll() is None
    release.touch()  # the first build's stage may finish now
    assert first.wait() == 0, first.stderr()
    assert second.wait() == 0, second.stderr()
    assert built(log) == ["top"], "stage:top must be built exactly once"
    assert ran_tasks(second.stdout()) == set(), "the second build finds the first one's results"
    (line,) = message_lines(second.stderr())
    assert re.fullmatch(rf"vaultdoit: build/\.vaultdoit\.lock is held by pid {first.pid} \(doit -n 2 -P thread "
                        r"--reporter=json final_image\), running stage:top since \d\d:\d\d:\d\d; "
                        r"waiting for it to finish", line), line
    no_traceback(first.stderr(), second.stderr())


def test_lock_fail_exits_at_once_naming_the_holder_and_list_still_works(team, runs, tmp_path):
    root, env, log = team
    before = build_then_change_top(root, env, log)
    ready = tmp_path / "ready"
    first = runs(root, slow(env, ready), "final_image")
    wait_for(ready.exists, 60, "the first build to be inside stage:top")
    for args, extra in ((["lock=fail"], {}), ([], {"VAULTDOIT_LOCK": "fail"})):
        start = time.monotonic()
        result = run_doit(root, "final_image", *args, env={**env, **extra}, check=False)
        assert time.monotonic() - start < 30
        assert result.returncode == 1, result.stderr
        (line,) = message_lines(result.stderr)
        assert re.fullmatch(rf"vaultdoit: error: build/\.vaultdoit\.lock: another build holds the lock: "
                            rf"pid {first.pid} \(doit final_image\), running stage:top since \d\d:\d\d:\d\d "
                            r"\(fix: wait for it to finish, or drop lock=fail / VAULTDOIT_LOCK=fail to wait\)",
                            line), line
        no_traceback(result.stdout, result.stderr)
    # Read-only commands never wait.
    listing = run_doit(root, "list", env=env)
    assert "stage:top" in listing.stdout
    assert first.proc.poll() is None, "the first build was still running all along"
    assert built(log) == ["top"]
    # Stopping the first build leaves the previous image, and frees the lock.
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130
    assert images(root)["top"] == before["top"]
    assert ran_tasks(run_doit(root, "--reporter=json", "final_image", "lock=fail", env=env).stdout) == {
        "stage:top", "final_image"}


def test_bad_lock_setting_is_one_line(team):
    root, env, _ = team
    result = run_doit(root, "final_image", "lock=maybe", env=env, check=False)
    assert result.returncode == 2
    assert message_lines(result.stderr) == [
        "vaultdoit: error: lock=maybe: must be wait or fail (fix: lock=fail fails at once when another build runs, "
        "lock=wait waits)"]


# --- children never outlive the build ---------------------------------------------


def test_killed_build_leaves_no_process_and_the_next_run_recovers(team, runs, tmp_path):
    root, env, log = team
    before = build_then_change_top(root, env, log)
    ready = tmp_path / "ready"
    run = runs(root, slow(env, ready, FAKE_PACKER_GRANDCHILD="1"), "final_image")
    wait_for(ready.exists, 60, "the fake packer to start its grandchild")
    packer, grandchild = (int(p) for p in ready.read_text().split())
    supervisor = parent_of(packer)
    assert parent_of(supervisor) == run.pid
    # The grandchild is in a session of its own, like a QEMU that left Packer's group.
    assert os.getsid(grandchild) == grandchild != os.getsid(packer)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    tree = (supervisor, packer, grandchild)
    wait_for(lambda: not any(alive(p) for p in tree), 5, f"processes {tree} to end after SIGKILL of doit")
    assert built(log) == ["top"]
    # The next run restores the previous image, rebuilds the stage and the final image.
    assert ran_tasks(run_doit(root, "--reporter=json", "final_image", env=env).stdout) == {"stage:top",
                                                                                          "final_image"}
    assert built(log) == ["top"]
    after = images(root)
    assert after["top"][:4] == b"QFI\xfb" and after["top"] != before["top"]
    assert after["mid"] == before["mid"]
    assert not list((root / "build/stages").glob(".*vaultdoit-prev"))


def test_build_refuses_to_start_while_another_process_uses_the_stage(team):
    root, env, log = team
    before = build_then_change_top(root, env, log)
    top = root / "build/stages/top/top.qcow2"
    # What an older run's QEMU looks like to us: another session, the image open.
    with top.open("rb") as image:
        orphan = subprocess.Popen(["sleep", "300"], stdin=image, start_new_session=True)
    try:
        result = run_doit(root, "final_image", env=env, check=False)
        assert result.returncode == 1
        expected = f"sleep (pid {orphan.pid}) still uses build/stages/top/ (fix: stop it, e.g. kill {orphan.pid})"
        assert (result.stdout + result.stderr).count(expected) == 1, result.stdout + result.stderr
        no_traceback(result.stdout, result.stderr)
        assert built(log) == []
        assert images(root) == before
    finally:
        orphan.kill()
        orphan.wait()
    assert ran_tasks(run_doit(root, "--reporter=json", "final_image", env=env).stdout) == {"stage:top",
                                                                                          "final_image"}


# --- Ctrl-C -------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [[], ["-n", "2", "-P", "thread"]], ids=["serial", "threads"])
def test_ctrl_c_stops_the_stage_keeps_the_image_and_says_so(team, runs, tmp_path, parallel):
    root, env, log = team
    run_doit(root, "final_image", env=env)
    built(log)
    # mid's input: mid (fast) then top (slow) rebuild; Ctrl-C lands in top.
    (root / "ansible/files/mid.txt").write_text("mid changed\n")
    before = images(root)
    ready = tmp_path / "ready"
    run = runs(root, slow(env, ready, FAKE_PACKER_SLOW="top"), *parallel, "final_image")
    wait_for(ready.exists, 60, "the fake packer to be inside stage:top")
    (packer,) = (int(p) for p in ready.read_text().split())
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(60) == 130
    stderr = run.stderr()
    no_traceback(stderr, run.stdout())
    assert message_lines(stderr)[-1] == "vaultdoit: interrupted: stage:top stopped, previous image kept"
    assert images(root)["top"] == before["top"]
    assert not alive(packer)
    assert not (root / "build/.vaultdoit/top.building").exists()
    assert not list((root / "build/stages").glob(".*vaultdoit-prev"))
    assert built(log) == ["mid", "top"]
    # doit saved its database before we exited: stage:mid, finished before Ctrl-C, stays built.
    assert ran_tasks(run_doit(root, "--reporter=json", "final_image", env=env).stdout) == {"stage:top",
                                                                                          "final_image"}


# --- OS errors: one line with the path ------------------------------------------------------


@pytest.fixture(scope="module")
def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): permissions cannot be made to apply")
    # Still uid 0 (it can read the venv and the test folders it owns), but without
    # the capabilities that let root ignore file modes.
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (setpriv needs CAP_SETPCAP)")
    return prefix


def _chmod_tree(folder: Path, remove: int = 0, add: int = 0) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((path.stat().st_mode & ~remove) | add)


def test_read_only_build_folder_is_one_line(team, unprivileged):
    root, env, log = team
    before = build_then_change_top(root, env, log)
    _chmod_tree(root / "build", remove=0o222)
    try:
        result = run_doit(root, "final_image", env=env, prefix=unprivileged, check=False)
        listing = run_doit(root, "list", env=env, prefix=unprivileged, check=False)
    finally:
        _chmod_tree(root / "build", add=0o200)
    assert result.returncode == 2, result.stderr
    assert message_lines(result.stderr) == [
        "vaultdoit: error: build/.vaultdoit.lock: Permission denied (fix: check the owner and mode of "
        "build/.vaultdoit.lock and its folders (ls -ld), or run as their owner)"]
    no_traceback(result.stdout, result.stderr)
    assert built(log) == []
    assert images(root) == before
    assert listing.returncode == 0 and "stage:top" in listing.stdout, "reading commands still work"


def test_unreadable_database_is_one_line(team, unprivileged):
    root, env, log = team
    run_doit(root, "final_image", env=env)
    db = root / "build/.vaultdoit/doit.sqlite3"
    db.chmod(0)
    try:
        for command in ("final_image", "list"):
            result = run_doit(root, command, env=env, prefix=unprivileged, check=False)
            assert result.returncode == 2, result.stderr
            assert message_lines(result.stderr) == [
                "vaultdoit: error: build/.vaultdoit/doit.sqlite3: Permission denied (fix: check the owner and "
                "mode of build/.vaultdoit/doit.sqlite3 and its folders (ls -ld), or run as their owner)"]
            no_traceback(result.stdout, result.stderr)
    finally:
        db.chmod(0o644)


def test_unreadable_role_file_is_reported_before_the_stage_runs(team, unprivileged):
    root, env, log = team
    before = build_then_change_top(root, env, log)
    script = root / "ansible/roles/app/files/app.sh"
    script.chmod(0)
    try:
        result = run_doit(root, "final_image", env=env, prefix=unprivileged, check=False)
    finally:
        script.chmod(0o644)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    expected = ("ansible/roles/app/files/app.sh: Permission denied (fix: check the owner and mode of "
                "ansible/roles/app/files/app.sh and its folders (ls -ld), or run as their owner)")
    assert [line for line in output.splitlines() if "Permission denied" in line] == [expected]
    no_traceback(output)
    assert built(log) == [], "no stage may be built with an input it cannot read"
    assert images(root) == before


@pytest.fixture
def full_state_dir(team, tmp_path):
    """The team project built once, its build/.vaultdoit on a 2 MiB tmpfs that is full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    root, env, log = team
    run_doit(root, "final_image", env=env)
    built(log)
    state = root / "build/.vaultdoit"
    saved = tmp_path / "state"
    shutil.copytree(state, saved)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(state)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(saved, state, dirs_exist_ok=True)
        with (state / "filler").open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        yield root, env, log
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def test_full_disk_during_bookkeeping(full_state_dir):
    root, env, log = full_state_dir
    with open(root / "ansible/roles/app/files/app.sh", "a") as fh:
        fh.write("echo changed\n")
    before = images(root)
    result = run_doit(root, "final_image", env=env, check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    no_traceback(output)
    full = [line for line in output.splitlines() if "No space left on device" in line]
    assert full, output
    for line in full:
        assert re.match(r"(vaultdoit: error: )?build/\.vaultdoit/\S+: No space left on device \(fix: free space on "
                        r"the file system that holds build/\.vaultdoit\S* \(df -h build/\.vaultdoit\S*\)\)$",
                        line), line
    assert built(log) == []
    assert images(root) == before
    # doit's own database writes: one line too, and a failure exit code.
    forget = run_doit(root, "forget", "stage:top", env=env, check=False)
    assert forget.returncode == 1
    no_traceback(forget.stdout, forget.stderr)
    assert message_lines(forget.stderr) == [
        "vaultdoit: error: build/.vaultdoit/doit.sqlite3: database or disk is full; this run's results were not "
        "recorded, its tasks run again next time (fix: free space on the file system that holds build/.vaultdoit "
        "(df -h build/.vaultdoit))"]


# --- the one-line messages themselves ---------------------------------------------------------


def test_os_errors_are_one_line_with_the_path_and_a_fix(tmp_path, monkeypatch):
    import errno

    from vaultdoit.actions import task_action
    from vaultdoit.errors import os_error

    monkeypatch.chdir(tmp_path)
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "build/x"))
    assert str(os_error(denied)) == ("build/x: Permission denied (fix: check the owner and mode of build/x and its "
                                     "folders (ls -ld), or run as their owner)")
    assert str(os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/y"))) == (
        "/mnt/ro/y: Read-only file system (fix: its file system is mounted read-only: remount it read-write or "
        "move the project)")

    def write() -> None:
        (tmp_path / "build").mkdir()
        with open(tmp_path / "build/out.json", "w") as fh:  # the open file names the path
            # What a write on a full disk raises: no file name of its own.
            raise OSError(errno.ENOSPC, "No space left on device")

    failed = task_action(write)()
    assert str(failed.message) == ("build/out.json: No space left on device (fix: free space on the file system "
                                   "that holds build (df -h build))")
    missing = task_action(lambda: open(tmp_path / "gone.txt"))()
    assert missing.message == "gone.txt: No such file or directory (fix: it is missing: check the path, or run the task that makes it)"


def test_interrupt_message_names_what_stopped(tmp_path):
    from vaultdoit.interrupt import message

    image = tmp_path / "top.qcow2"
    image.write_bytes(b"x")
    assert message({"stage:top": (str(image),)}) == "vaultdoit: interrupted: stage:top stopped, previous image kept"
    assert message({"stage:new": (str(tmp_path / "new.qcow2"),)}) == (
        "vaultdoit: interrupted: stage:new stopped, no image written")
    assert message({"stage:a": (str(image),), "cache:wheels": ()}) == (
        "vaultdoit: interrupted: stage:a stopped, previous image kept; cache:wheels stopped, it runs again next time")
    assert message({"verify": ()}) == "vaultdoit: interrupted: verify stopped, boot test not finished"
    assert message({}) == "vaultdoit: interrupted: no task was running, finished tasks stay up to date"


def test_tracked_actions_report_running_tasks_and_check_first():
    from doit.exceptions import TaskFailed

    from vaultdoit import interrupt

    seen: list[list[str]] = []
    interrupt.on_change(seen.append)
    calls: list[str] = []
    task = {"basename": "stage:x", "targets": ["x.qcow2"],
            "actions": [(lambda a, b=0: calls.append(f"{a}{b}") or interrupt.running(), ["a"], {"b": 1})]}
    wrapped = interrupt.tracked(task)
    func, args, kwargs = wrapped["actions"][0]
    assert func(*args, **kwargs) == ["stage:x"] and calls == ["a1"]
    assert interrupt.running() == []
    assert ["stage:x"] in seen and seen[-1] == []
    refused = interrupt.tracked(task, before=lambda: TaskFailed("unreadable"))["actions"][0]
    assert refused[0](*refused[1], **refused[2]).message == "unreadable"
    assert calls == ["a1"], "the action must not run when the check fails"
