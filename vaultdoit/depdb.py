"""doit's dependency database: a write that fails (disk full, read-only) is one line, not a traceback.

doit writes its sqlite3 database while tasks run (a failed task's record is
deleted at once) and when the run ends. An ``sqlite3.OperationalError`` there
escapes as a traceback with exit code 3 and hides the failed task's own
message. ``guard()`` wraps those writes: sqlite rolls the transaction back, so
the database keeps its last good state (tasks whose results were lost simply
run again next time); doit finishes its report; then one line names the
database and the problem, and the exit code is 1.
"""

from __future__ import annotations

import atexit
import functools
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from doit.dependency import SqliteDB

from vaultdoit.errors import FileProblem, shown_path
from vaultdoit.exits import EXIT_FAILED
_failures: list[str] = []


def _hint(problem: str, db_file: str) -> str:
    folder = os.path.dirname(db_file) or "."
    if "full" in problem:
        return f"free space on the file system that holds {folder} (df -h {folder})"
    if "readonly" in problem or "read-only" in problem:
        return f"make {folder} and {db_file} writable, or remount the file system read-write"
    return f"check the disk that holds {folder}"


def _report() -> None:
    """At exit, after doit's own report: one line per failed write, and exit code 1."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for line in dict.fromkeys(_failures):
        os.write(2, f"vaultdoit: error: {line}\n".encode())
    os._exit(EXIT_FAILED)


def _record(db: Any, err: sqlite3.Error) -> None:
    db_file = shown_path(str(db.name))
    problem = str(err)
    _failures.append(str(FileProblem(f"{problem}; this run's results were not recorded, its tasks run again "
                                     "next time", file=db_file, hint=_hint(problem, db_file))))
    if len(_failures) == 1:
        atexit.register(_report)


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.OperationalError as err:
            try:
                self._conn.rollback()
                if method.__name__ == "dump":
                    self._conn.close()
            except sqlite3.Error:
                pass
            _record(self, err)
            return None

    write.vaultdoit_guarded = True  # type: ignore[attr-defined]
    return write


def guard() -> None:
    """Wrap the writes of doit's sqlite3 backend (idempotent)."""
    for name in ("remove", "remove_all", "dump"):
        method = getattr(SqliteDB, name)
        if not getattr(method, "vaultdoit_guarded", False):
            setattr(SqliteDB, name, _guarded(method))
