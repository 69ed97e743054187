"""doit's dependency records: checked when the project loads, rebuilt from the stage records.

A stage image carries the key it was built for (see owned.MARKER). When doit's
database is lost or corrupt, `vaultdoit repair` writes a fresh one in which a
task counts as up to date only if its outputs are present and what they were
built from is what the project asks for now: a stage whose recorded key equals
its key computed from today's inputs, a final image whose manifest names the
top stage's key. Nothing is rebuilt and no image is thrown away.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vaultdoit import keys, owned, stage_files
from vaultdoit.errors import ConfigError
from vaultdoit.outputs import manifest_path
from vaultdoit.project import Project
from vaultdoit.uptodate import settings_changed

DB_NAME = "doit.sqlite3"


def db_path(project: Project) -> Path:
    return project.config.state_dir / DB_NAME


def check_db(path: Path) -> None:
    """Raise a one-line ConfigError when doit's database cannot be read."""
    if not path.exists():
        return
    problem = None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute("PRAGMA quick_check").fetchone()
            if not row or row[0] != "ok":
                problem = str(row[0] if row else "no answer")
            else:
                conn.execute("SELECT count(*) FROM doit").fetchone()
    except sqlite3.Error as exc:
        problem = str(exc)
    if problem is not None:
        raise ConfigError(f"the build's dependency database is damaged ({problem})", file=path,
                          hint="run `vaultdoit repair`: it rebuilds it from the stage records and keeps every image")


@contextlib.contextmanager
def _dependency(project: Project, path: Path) -> Iterator[Any]:
    from doit.dependency import Dependency, SqliteDB

    from vaultdoit import checker
    from vaultdoit.tasks.common import digests

    deps = Dependency(SqliteDB, str(path), checker_cls=checker.make_checker(digests(project)))
    try:
        yield deps
    finally:
        deps.close()


def build_tasks(tasks: Iterable[Any]) -> dict[str, Any]:
    """The tasks a build's status and explanations cover, by name. dev:<stage> runs only when
    asked, every time: it is not part of the build's status."""
    return {t.name: t for t in tasks if (t.actions or t.file_dep) and not t.name.startswith("dev:")}


def _tasks(project: Project) -> list[Any]:
    from doit.loader import generate_tasks

    from vaultdoit.tasks import gen_all

    return [t for t in build_tasks(generate_tasks("vaultdoit", gen_all(project))).values() if t.actions]


def _verdict(project: Project, task: Any, stage_keys: dict[str, str]) -> str | None:
    """Why ``task`` must run (None: its outputs are what the project asks for now)."""
    root = project.config.root
    missing = [t for t in task.targets if not (root / t).exists()]
    if missing:
        return f"output missing: {missing[0]}"
    absent = [d for d in task.file_dep if not (root / d).exists()]
    if absent:
        return f"input missing: {absent[0]}"
    if task.name.startswith("stage:"):
        stage = project.stage(task.name.split(":", 1)[1])
        from vaultdoit.packer import interrupted

        if interrupted(project.config.state_dir, stage):
            return "its last build was interrupted"
        marker = owned.read_marker(stage.output.parent)
        if marker is None or marker.get("key") != stage_keys.get(stage.id):
            return "its image was built from other inputs" if marker else "no build record beside its image"
        parent = project.parent(stage)
        recorded = marker.get("parent_image_sha256")
        if parent is not None and recorded is not None and recorded != stage_files.image_digest(parent.output):
            # Same key, but an overlay on other bytes (a parent rebuilt, or brought from elsewhere).
            return "its image is an overlay on another image of its parent"
        return None
    image = next((i for i in project.images if i.task("final_image") == task.name), None)
    if image is not None:
        manifest = manifest_path(root / keys.relpath(project.config.paths.final_image(image.name), root))
        try:
            recorded = json.loads(manifest.read_text())["stages"][-1]["input_digest"]
        except (OSError, ValueError, KeyError, IndexError):
            return "no manifest"
        return None if recorded == stage_keys.get(image.top) else "made from another top stage"
    if task.name == "keys" or task.name.startswith("cache:iso-"):
        return None  # the files are the record (an ISO-store file is re-verified when it changed)
    return "re-checked on the next run"


def repair(project: Project) -> list[tuple[str, str | None]]:
    """Move a damaged database aside and write a new one from the stage records:
    (task, None if kept up to date, else why it will run)."""
    path = db_path(project)
    if path.exists():
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
    path.parent.mkdir(parents=True, exist_ok=True)
    return adopt(project, path)


def adopt(project: Project, path: Path) -> list[tuple[str, str | None]]:
    """Record as up to date every task whose outputs match what the project asks for now."""
    root = project.config.root
    with contextlib.chdir(root):
        try:
            stage_keys = keys.planned_keys(project.stages, root)
        except OSError:  # an unreadable input: nothing can be shown to be up to date
            stage_keys = {}
        results: list[tuple[str, str | None]] = []
        with _dependency(project, path) as deps:
            for task in _tasks(project):
                reason = _verdict(project, task, stage_keys)
                if reason is None:
                    task.values = {}
                    for check in task.uptodate:
                        utd = check[0] if isinstance(check, tuple) else check
                        if isinstance(utd, settings_changed):
                            task.values[utd.key] = utd.text
                    deps.save_success(task)
                results.append((task.name, reason))
    return results


def forget(project: Project, path: Path, tasks: list[str]) -> None:
    """Drop doit's records of ``tasks`` (they run next time), as `doit forget` does."""
    with _dependency(project, path) as deps:
        for name in tasks:
            deps.remove(name)
