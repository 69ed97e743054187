"""Shared fixtures: fixture projects copied to a temp folder, helpers to run doit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
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
    """`vaultdoit run TARGET` in the background, as in a second terminal."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        self.root = root
        self.out = root.parent / f"run-{time.monotonic_ns()}.out"
        self.proc = subprocess.Popen([str(VENV_BIN / "vaultdoit"), "-C", str(root), "run", *args],
                                     env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=self.out.open("w"),
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
