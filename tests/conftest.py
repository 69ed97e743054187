"""Shared fixtures: fixture projects copied to a temp folder, helpers to run doit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
REPO = TESTS.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def project_copy(tmp_path: Path):
    """Copy ``tests/fixtures/projects/<name>`` into a temp folder and return its path."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / "projects" / name, dest)
        return dest

    return copy


def clone(tmp_path: Path, where: str) -> Path:
    """A fresh copy of the `team` fixture at ``tmp_path/where/team`` (a clone at another path)."""
    root = tmp_path / where / "team"
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES / "projects/team", root)
    return root


def run_doit(root: Path, *args: str, env: dict[str, str] | None = None,
             check: bool = True, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the venv's doit in ``root`` (after ``prefix``, e.g. a command that drops privileges)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([*prefix, str(VENV_BIN / "doit"), *args], cwd=root, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran_tasks(stdout: str) -> set[str]:
    """Names of the tasks doit's JSON reporter says were executed (not up to date)."""
    report = json.loads(stdout)
    return {t["name"] for t in report["tasks"] if t["result"] == "success"}


def executed(stdout: str) -> set[str]:
    """Tasks doit's console reporter (``--reporter=console``) says it ran (``.  name`` lines). With
    ``-n``, use this rather than ``--reporter=json``: doit's threads swap sys.stdout under the JSON
    reporter, which then fails at the end (exit 3, nothing printed)."""
    return {line[3:].strip() for line in stdout.splitlines() if line.startswith(".  ")}


def fake_packer_env(root: Path, work: Path, profile: str | None = None) -> dict[str, str]:
    """Environment that runs tests/fakes/packer for the stages of the project at ``root``:
    each stage's image is made by the real qemu-img as an overlay on what it must be backed by."""
    from vaultdoit.plan import load_project

    project = load_project(root, profile)
    plan = {}
    for stage in project.stages:
        parent = project.parent(stage)
        backing = parent.output if parent is not None else stage.root_image
        plan[stage.id] = {"output": str(stage.output), "parent": str(backing) if backing else None}
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(plan))
    return {
        "PATH": f"{TESTS / 'fakes'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_PACKER_PLAN": str(work / "plan.json"),
        "FAKE_PACKER_LOG": str(work / "packer.log"),
        "FAKE_PACKER_RUNS": str(work / "runs.jsonl"),
    }


def fake_runs(work: Path) -> list[dict]:
    """The builds the fake packer recorded (FAKE_PACKER_RUNS), in the order they finished."""
    path = work / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def packer_runs(work: Path) -> list[str]:
    """Stages the fake packer built since the last call (and forget them)."""
    log = work / "packer.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def guest_env(root: Path, work: Path, profile: str | None = None) -> dict[str, str]:
    """``fake_packer_env`` plus a fake QEMU and ssh that act as a guest that boots (tests/fakes/guest):
    ``verify``, ``vaultdoit run`` and ``vaultdoit ssh`` work on the fake images."""
    env = fake_packer_env(root, work, profile)
    env["PATH"] = f"{TESTS / 'fakes' / 'guest'}{os.pathsep}{env['PATH']}"
    env["FAKE_QEMU_LOG"] = str(work / "qemu.log")
    return env


class Running:
    """`vaultdoit run TARGET` in the background, as in a second terminal (as ``user`` if given)."""

    def __init__(self, root: Path, env: dict[str, str], *args: str, user: NormalUser | None = None) -> None:
        self.root = root
        self.out = root.parent / f"run-{time.monotonic_ns()}.out"
        argv = ["-C", str(root), "run", *args]
        if user is None:
            argv, full_env = [str(VENV_BIN / "vaultdoit"), *argv], {**os.environ, **env}
        else:
            argv, full_env = [*user.switch, str(user.python_bin / "vaultdoit"), *argv], user.env(env)
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(argv, env=full_env, cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def record(self, deadline: float = 60) -> dict[str, object]:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for path in (self.root / "build").glob("**/.vaultdoit/run/*.json"):
                return json.loads(path.read_text())
            assert self.proc.poll() is None, self.out.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no session record within {deadline} s: {self.out.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


PLUGINS = "vaultdoit_doit_commands-0.dist-info"


@pytest.fixture(scope="session")
def doit_plugins(tmp_path_factory) -> dict[str, str]:
    """Environment in which doit finds the commands pyproject.toml declares as ``doit.COMMAND``
    entry points, whether or not the installed metadata already has them (an editable install
    made before they were added does not)."""
    import tomllib
    from importlib.metadata import entry_points

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["doit.COMMAND"]
    installed = {e.name: e.value for e in entry_points(group="doit.COMMAND")}
    if all(installed.get(name) == value for name, value in declared.items()):
        return {}
    site = tmp_path_factory.mktemp("plugins")
    info = site / PLUGINS
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vaultdoit-doit-commands\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[doit.COMMAND]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{path}{os.pathsep}{site}" if path else f"{REPO}{os.pathsep}{site}"}


# --- a normal (non-root) user for the tests that build without root ----------------------------------

TEST_USER = "vaultdoit-test"  # created when the tests run as root (CI); kept for later runs
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # a normal user's PATH: no sbin folders


@dataclass(frozen=True)
class NormalUser:
    """Who runs a build without root: the user running the tests, or (as root) a test user."""

    name: str
    uid: int
    gid: int
    home: Path
    python_bin: Path  # a virtual environment with vaultdoit that this user can run
    switch: tuple[str, ...] = ()  # the command prefix that becomes this user ("" when it is us)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """This process's environment as the user would have it, plus ``extra`` (PATH: sbin left out)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_AUTH_SOCK", "SUDO_"))}
        env.update(extra or {})
        path = [p for p in env.get("PATH", USER_PATH).split(os.pathsep) if not p.rstrip("/").endswith("sbin")]
        env.update(PATH=os.pathsep.join(path), HOME=str(self.home), USER=self.name, LOGNAME=self.name)
        return env

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.switch, *argv], cwd=cwd, env=self.env(env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} as {self.name} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def own(self, path: Path) -> None:
        """Give ``path`` (recursively) to the user."""
        if self.switch:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)

    def folder(self, parent: Path | None = None) -> Path:
        """A new folder of the user's, reachable by it (pytest's own temp folders are private to root)."""
        folder = Path(tempfile.mkdtemp(prefix="vaultdoit-user-", dir=parent))
        folder.chmod(0o755)
        self.own(folder)
        return folder


def not_owned_by(uid: int, folder: Path) -> list[str]:
    """Everything under ``folder`` (itself included) whose owner is not ``uid``."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        if st.st_uid != uid:
            found.append(f"{path.relative_to(folder)} (uid {st.st_uid})")
    return found


def _create_user(name: str) -> None:
    if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
        return
    groups = []
    if Path("/dev/kvm").exists():
        import grp

        try:
            # /dev/kvm belongs to the kvm group where it exists: builds use it through that group.
            groups = ["--groups", grp.getgrgid(Path("/dev/kvm").stat().st_gid).gr_name] \
                if Path("/dev/kvm").stat().st_gid != 0 else []
        except KeyError:
            pass
    created = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", *groups, name],
                             capture_output=True, text=True)
    if created.returncode != 0 and subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        raise AssertionError(f"useradd {name} failed: {created.stderr}")  # (another run may have made it meanwhile)


def ensure_subordinate_ids(name: str) -> None:
    """Give the user a range in /etc/subuid and /etc/subgid if it has none (as scripts/setup does)."""
    files = [Path("/etc/subuid"), Path("/etc/subgid")]
    if all(any(line.split(":")[0] == name for line in f.read_text().splitlines()) for f in files if f.exists()) \
            and all(f.exists() for f in files):
        return
    subprocess.run([str(TESTS.parent / "scripts" / "setup"), "--subids-only", name], check=True,
                   capture_output=True)


def _usable_python(user: NormalUser) -> bool:
    """Can the user run ``user.python_bin``'s python with vaultdoit and doit?"""
    proc = subprocess.run([*user.switch, str(user.python_bin / "python"), "-c", "import vaultdoit, doit"],
                          env=user.env(), cwd="/", capture_output=True)
    return proc.returncode == 0


def _user_venv(user: NormalUser) -> Path:
    """A virtual environment of the user's with this checkout installed: when the test runner's own
    lives where other users cannot go (a Python under /root), wheels made here are installed there
    (made with the network or pip's cache, about a minute), with the system's python3."""
    wheels = user.folder()
    source = Path(tempfile.mkdtemp(prefix="vaultdoit-source-"))
    venv = user.home / f"venv-{os.getpid()}"
    try:
        # From a copy: building in the checkout would leave build/ and an egg-info in it.
        for name in ("pyproject.toml", "README.md", "vaultdoit"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, source / name)
        made = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                               "-w", str(wheels), f"{source}[test]"], capture_output=True, text=True)
        if made.returncode != 0:
            raise AssertionError(f"pip wheel of this checkout for {user.name}'s environment failed:\n{made.stderr}")
        user.own(wheels)
        python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"
        # Not PYTHONPATH: a checkout on it would count as vaultdoit already installed.
        clean = {"PYTHONPATH": ""}
        user.run([python, "-m", "venv", str(venv)], cwd=user.home, env=clean)
        user.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "--no-index", "--find-links", str(wheels), "vaultdoit[test]"], cwd=user.home, env=clean)
        if not (venv / "bin/vaultdoit").exists():
            raise AssertionError(f"vaultdoit was not installed into {venv}")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)
    return venv / "bin"


@pytest.fixture(scope="session")
def normal_user() -> Iterator[NormalUser]:
    """The user who builds without root (see NormalUser)."""
    import pwd

    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        yield NormalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), VENV_BIN)
        return
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run as a normal user")
    _create_user(TEST_USER)
    entry = pwd.getpwnam(TEST_USER)
    # setpriv itself is found and started while it still has root's capabilities; env is not: the
    # user's program is looked up and started as the user alone (a Python under /root is not).
    switch = ("setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", "/usr/bin/env")
    user = NormalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), VENV_BIN, switch)
    made = None
    if not _usable_python(user):
        made = _user_venv(user)
        user = NormalUser(user.name, user.uid, user.gid, user.home, made, switch)
    yield user
    if made is not None:
        shutil.rmtree(made.parent, ignore_errors=True)


@pytest.fixture
def team(project_copy, tmp_path: Path):
    """The ``team`` fixture project with the fake packer first on PATH: (root, env, packer log)."""
    root = project_copy("team")
    return root, fake_packer_env(root, tmp_path), tmp_path / "packer.log"


def low_free_port() -> int:
    """A free loopback port below 32768 (apt-cacher-ng binds nothing from there up), picked at
    random so that test runs side by side on one host rarely try the same one."""
    import random
    import socket

    ports = list(range(20000, 32000))
    random.shuffle(ports)
    for port in ports[:500]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below 32768")


@pytest.fixture
def registry(tmp_path: Path):
    """A docker-registry of this test's own on 127.0.0.1 (see tests/registry.py), stopped afterwards."""
    import registry as registry_mod

    if not registry_mod.available():
        pytest.skip("needs docker-registry (Debian package docker-registry)")
    folder = tmp_path / "registry"
    folder.mkdir()
    server = registry_mod.LocalRegistry(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
