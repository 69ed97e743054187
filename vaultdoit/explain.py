"""Why would a task run? doit's own up-to-date check, worded for people.

Reads the same dependency DB and checker that `doit` uses, never writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit.dependency import Dependency, SqliteDB
from doit.loader import generate_tasks
from doit.task import Task


from vaultdoit import checker
from vaultdoit.errors import ConfigError
from vaultdoit.plan import Project, load_project
from vaultdoit.state import DB_NAME
from vaultdoit.tasks import gen_all
from vaultdoit.tasks.common import digests
from vaultdoit.uptodate import settings_changed, settings_diff


@dataclass
class Explanation:
    """The verdict on one task and the reasons behind it."""

    task: str
    doc: str
    will_run: bool
    reasons: list[str] = field(default_factory=list)


def _tasks(proj: Project) -> dict[str, Task]:
    def gen() -> Any:
        yield from gen_all(proj)

    tasks = generate_tasks("vaultdoit", gen())
    # dev:<stage> runs only when asked, every time: not part of the build's status.
    return {t.name: t for t in tasks if (t.actions or t.file_dep) and not t.name.startswith("dev:")}


def _rel(proj: Project, path: str) -> str:
    # Task paths are already relative to the project (see tasks.common.rel).
    return path if not os.path.isabs(path) else os.path.relpath(path, proj.config.root)


def explain_all(root: Path, profile: str | None = None) -> list[Explanation]:
    """Explanations for every task, in build order (parents first)."""
    proj = load_project(root, profile)
    tasks = _tasks(proj)
    dep_file = proj.config.state_dir / DB_NAME
    if not dep_file.exists():
        return [Explanation(name, t.doc or "", True, ["never built (no build state yet)"]) for name, t in tasks.items()]
    # doit runs in the project folder and records paths relative to it: check from there.
    with contextlib.chdir(proj.config.root):
        return _explain(proj, tasks, dep_file)


def _explain(proj: Project, tasks: dict[str, Task], dep_file: Path) -> list[Explanation]:
    deps = Dependency(SqliteDB, str(dep_file), checker_cls=checker.make_checker(digests(proj)))
    producer = {target: name for name, t in tasks.items() for target in t.targets}
    runs: dict[str, bool] = {}
    result: list[Explanation] = []
    try:
        for name, task in tasks.items():
            status = deps.get_status(task, tasks, get_log=True)
            reasons = _reasons(proj, deps, task, status.reasons)
            # A task whose input another task is about to rebuild will run too.
            for dep in sorted(task.file_dep):
                upstream = producer.get(dep)
                if upstream and runs.get(upstream):
                    reasons.append(f"input {_rel(proj, dep)} will be rebuilt by {upstream}")
            runs[name] = bool(reasons)
            result.append(Explanation(name, task.doc or "", bool(reasons), reasons))
    finally:
        deps.backend._conn.close()  # read-only use: nothing to commit
    return result


def _reasons(proj: Project, deps: Dependency, task: Task, raw: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    values = deps.get_values(task.name)
    for utd, _args, _kwargs in raw.get("uptodate_false", []):
        if isinstance(utd, settings_changed):
            lines.extend(settings_diff(values.get(utd.key), utd.settings))
        else:
            name = getattr(utd, "__name__", type(utd).__name__)
            if name.startswith("not_interrupted"):
                lines.append("the previous build was interrupted")
            elif name == "run_once":
                lines.append("never run")
            else:
                lines.append(f"uptodate check {name} is false")
    if raw.get("has_no_dependencies"):
        lines.append("task has no dependencies (always runs)")
    for target in raw.get("missing_target", []):
        lines.append(f"output missing: {_rel(proj, target)}")
    if raw.get("checker_changed"):
        lines.append("file checker changed since the last build")
    for path in raw.get("added_file_dep", []):
        lines.append(f"input added: {_rel(proj, path)}")
    for path in raw.get("removed_file_dep", []):
        lines.append(f"input removed: {_rel(proj, path)}")
    for path in raw.get("missing_file_dep", []):
        lines.append(f"input missing: {_rel(proj, path)}")
    for path in raw.get("changed_file_dep", []):
        state = deps._get(task.name, path)
        lines.append(f"input changed: {_rel(proj, path)}" if state else f"input new: {_rel(proj, path)}")
    return lines


def explain(root: Path, task_name: str, profile: str | None = None) -> Explanation:
    """The explanation of one task, or a ConfigError naming the known tasks."""
    everything = explain_all(root, profile)
    for item in everything:
        if item.task == task_name:
            return item
    known = ", ".join(e.task for e in everything)
    raise ConfigError(f"no task named {task_name!r}", hint=f"pick one of: {known}")


def to_json(items: list[Explanation]) -> str:
    return json.dumps([item.__dict__ for item in items], indent=2)
