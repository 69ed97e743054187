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
from vaultdoit.project import Project
from vaultdoit.state import DB_NAME, build_tasks
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
    # Stage tasks, in `explain` only: the key the stage would be built for now, the key its
    # image was built for, and where that image came from (built here, or pulled from a registry).
    key: str | None = None
    built_key: str | None = None
    origin: str | None = None


def _tasks(proj: Project) -> dict[str, Task]:
    def gen() -> Any:
        yield from gen_all(proj)

    return build_tasks(generate_tasks("vaultdoit", gen()))


def _rel(root: Path, path: str) -> str:
    # Task paths are already relative to the project (see tasks.common.rel).
    return path if not os.path.isabs(path) else os.path.relpath(path, root)


def explain_all(root: Path, profile: str | None = None, variables: tuple[tuple[str, str], ...] = (),
                names: list[str] | None = None) -> list[Explanation]:
    """Explanations for every task (or ``names`` and what they need), in build order (parents first)."""
    # The planner only here: `doit explain` and `doit status` explain the tasks doit already loaded.
    from vaultdoit.plan import load_project

    return _explain_all(load_project(root, profile, variables), names)


def _explain_all(proj: Project, names: list[str] | None = None) -> list[Explanation]:
    tasks = _tasks(proj)
    dep_file = proj.config.state_dir / DB_NAME
    if not dep_file.exists():
        chosen = selection(tasks, names)
        return [Explanation(name, t.doc or "", True, ["never built (no build state yet)"])
                for name, t in tasks.items() if name in chosen]
    # doit runs in the project folder and records paths relative to it: check from there.
    with contextlib.chdir(proj.config.root):
        deps = Dependency(SqliteDB, str(dep_file), checker_cls=checker.make_checker(digests(proj)))
        try:
            return explain_tasks(deps, tasks, proj.config.root, names)
        finally:
            deps.backend._conn.close()  # read-only use: nothing to commit


def selection(tasks: dict[str, Task], names: list[str] | None) -> set[str]:
    """``names`` and every task they need (task_dep, and the tasks that make their file_dep); all if None."""
    if not names:
        return set(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise ConfigError(f"no task named {unknown[0]!r}", hint="pick one of: " + ", ".join(tasks))
    producer = {target: name for name, t in tasks.items() for target in t.targets}
    chosen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in chosen or name not in tasks:
            continue
        chosen.add(name)
        task = tasks[name]
        todo += [*task.task_dep, *task.setup_tasks, *(producer[d] for d in task.file_dep if d in producer)]
    return chosen


def explain_tasks(deps: Dependency, tasks: dict[str, Task], root: Path,
                  names: list[str] | None = None) -> list[Explanation]:
    """doit's verdict on ``tasks`` (or ``names`` and what they need) from ``deps``, with reasons in words.

    Works with any doit backend; run it from the folder doit runs in (task paths are relative to it).
    """
    chosen = selection(tasks, names)
    producer = {target: name for name, t in tasks.items() for target in t.targets}
    runs: dict[str, bool] = {}
    result: list[Explanation] = []
    for name, task in tasks.items():
        if name not in chosen:
            continue
        status = deps.get_status(task, tasks, get_log=True)
        if status.status == "run" and not deps._in(task.name):
            reasons = ["never built (no record of a successful run)"]
        else:
            reasons = _reasons(root, deps, task, status.reasons)
        # A task whose input another task is about to rebuild will run too.
        for dep in sorted(task.file_dep):
            upstream = producer.get(dep)
            if upstream and runs.get(upstream):
                reasons.append(f"input {_rel(root, dep)} will be rebuilt by {upstream}")
        runs[name] = bool(reasons)
        result.append(Explanation(name, task.doc or "", bool(reasons), reasons))
    return result


def _reasons(root: Path, deps: Dependency, task: Task, raw: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    values = deps.get_values(task.name)
    for utd, _args, _kwargs in raw.get("uptodate_false", []):
        if isinstance(utd, settings_changed):
            lines.extend(settings_diff(values.get(utd.key), utd.settings))
        elif getattr(utd, "reason", None):
            lines.append(str(utd.reason))
        else:
            name = getattr(utd, "__name__", None) or repr(utd)
            lines.append("never run" if name == "run_once" else f"uptodate check {name} is false")
    if raw.get("has_no_dependencies"):
        lines.append("task has no dependencies (always runs)")
    for target in raw.get("missing_target", []):
        lines.append(f"output missing: {_rel(root, target)}")
    if raw.get("checker_changed"):
        lines.append("file checker changed since the last build")
    for path in raw.get("added_file_dep", []):
        lines.append(f"input added: {_rel(root, path)}")
    for path in raw.get("removed_file_dep", []):
        lines.append(f"input removed: {_rel(root, path)}")
    for path in raw.get("missing_file_dep", []):
        lines.append(f"input missing: {_rel(root, path)}")
    for path in raw.get("changed_file_dep", []):
        state = deps._get(task.name, path)
        lines.append(f"input changed: {_rel(root, path)}" if state else f"input new: {_rel(root, path)}")
    return lines


def explain(root: Path, task_name: str, profile: str | None = None,
            variables: tuple[tuple[str, str], ...] = ()) -> Explanation:
    """The explanation of one task, or a ConfigError naming the known tasks."""
    from vaultdoit.plan import load_project

    proj = load_project(root, profile, variables)
    item = next(item for item in _explain_all(proj, [task_name]) if item.task == task_name)
    if task_name.startswith("stage:"):
        _add_key(proj, item, task_name.split(":", 1)[1])
    return item


def _add_key(proj: Project, item: Explanation, name: str) -> None:
    """The stage's key now (inputs are read and hashed), the one its image was built for, its origin."""
    from vaultdoit import keys, owned

    with contextlib.chdir(proj.config.root):
        try:
            item.key = keys.planned_keys(proj.stages, proj.config.root, digests(proj)).get(name)
        except OSError:
            item.key = None  # an input is missing: the reasons say which
    record = owned.read_marker(proj.stage(name).output.parent) or {}
    if record.get("stage") == name:
        item.built_key = record.get("key")
        pulled = record.get("pulled")
        item.origin = f"pulled from {pulled.get('from')}" if isinstance(pulled, dict) else "built here"


def to_json(items: list[Explanation]) -> str:
    return json.dumps([item.__dict__ for item in items], indent=2)


def render_status(items: list[Explanation]) -> str:
    """One line per task: up to date, or will run and why (the first reason, and how many more)."""
    width = max((len(i.task) for i in items), default=0)
    lines = []
    for item in items:
        verdict = "up to date" if not item.will_run else "will run: " + item.reasons[0] + \
            (f" (+{len(item.reasons) - 1} more)" if len(item.reasons) > 1 else "")
        lines.append(f"{item.task:<{width}}  {verdict}")
    return "\n".join(lines)


def render_explanation(item: Explanation) -> str:
    """``task: will run`` and its reasons (or ``up to date``); for a stage explained alone, its keys and origin."""
    lines = [f"{item.task}: {'will run' if item.will_run else 'up to date'}",
             *(f"  - {reason}" for reason in item.reasons)]
    if item.key or item.built_key:
        lines.append(f"  key: {item.key or 'unknown (an input is missing)'}")
    if item.built_key and item.built_key != item.key:
        lines.append(f"  image built for: {item.built_key}")
    if item.origin:
        lines.append(f"  image: {item.origin}")
    return "\n".join(lines)
