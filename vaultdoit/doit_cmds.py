"""doit commands that vaultdoit adds through doit's plugin entry points (``doit.COMMAND``).

``doit explain TASK``, ``doit status`` and a ``doit dumpdb`` that reads the
sqlite3 backend. They load the dodo file like ``doit list`` and use the
dependency database doit itself would use, so doit's ``--db-file``,
``--backend`` and ``--check_file_uptodate`` apply. They work in any doit
project; a vaultdoit project's settings checks also say which setting changed.

This module is imported by ``doit help`` on any project: keep it light.
"""

from __future__ import annotations

import json
import pprint
import sqlite3
from pathlib import Path
from typing import Any

from doit.cmd_base import DoitCmdBase
from doit.cmd_dumpdb import DumpDB as DoitDumpDB
from doit.exceptions import InvalidCommand

from vaultdoit.exits import EXIT_WOULD_RUN  # status: 1 when something would run

opt_json = {"name": "as_json", "short": "", "long": "json", "type": bool, "default": False,
            "help": "machine-readable output"}
opt_quiet = {"name": "quiet", "short": "q", "long": "quiet", "type": bool, "default": False,
             "help": "print nothing: the exit code says whether anything would run"}


def _explain(cmd: DoitCmdBase, names: list[str] | None) -> list[Any]:
    from vaultdoit import explain
    from vaultdoit.errors import ConfigError
    from vaultdoit.state import build_tasks

    tasks = build_tasks(cmd.task_list)
    try:
        # doit loaded the dodo file from its folder and runs there: task paths are relative to it.
        return explain.explain_tasks(cmd.dep_manager, tasks, Path.cwd(), names)
    except ConfigError as err:
        raise InvalidCommand(str(err)) from None


class Explain(DoitCmdBase):
    """doit explain TASK..."""

    name = "explain"
    doc_purpose = "say why tasks would run (which inputs or settings changed), or that they are up to date"
    doc_usage = "TASK [TASK ...]"
    doc_description = "Reads doit's dependency database; never writes it. `doit status` gives an exit code."
    cmd_options = (opt_json,)

    def _execute(self, pos_args: list[str], as_json: bool = False) -> int:
        from vaultdoit import explain

        if not pos_args:
            raise InvalidCommand(f"`explain` needs a task name (see `{self.bin_name} list`)")
        items = [i for i in _explain(self, pos_args) if i.task in pos_args]
        self.outstream.write((explain.to_json(items) if as_json else
                              "\n".join(explain.render_explanation(i) for i in items)) + "\n")
        return 0


class Status(DoitCmdBase):
    """doit status [TASK...]"""

    name = "status"
    doc_purpose = "one line per task: up to date, or will run and why; exit code 1 when anything would run"
    doc_usage = "[TASK ...]"
    doc_description = ("With tasks: those and what they need. Exit code 0 when nothing would run, 1 when "
                       "something would (CI can gate on it), 3 for a mistake.")
    cmd_options = (opt_json, opt_quiet)

    def _execute(self, pos_args: list[str], as_json: bool = False, quiet: bool = False) -> int:
        from vaultdoit import explain

        items = _explain(self, pos_args or None)
        if as_json:
            self.outstream.write(explain.to_json(items) + "\n")
        elif not quiet:
            self.outstream.write(explain.render_status(items) + "\n")
        return EXIT_WOULD_RUN if any(i.will_run for i in items) else 0


class DumpDB(DoitCmdBase):
    """doit dumpdb: doit's own for dbm and json, and the sqlite3 backend too."""

    name = "dumpdb"
    doc_purpose = "dump the dependency database (any backend, sqlite3 included)"
    doc_usage = "[TASK ...]"
    doc_description = "With tasks: only their records."

    def _execute(self, dep_file: str, backend: str, pos_args: list[str]) -> int:
        if backend != "sqlite3":
            self.dep_manager.close()
            return int(DoitDumpDB(config=self.config).execute({"dep_file": dep_file}, pos_args) or 0)
        self.outstream.write(f"sqlite3 database {dep_file}\n")
        for name, data in sqlite_records(Path(dep_file)):
            if pos_args and name not in pos_args:
                continue
            self.outstream.write(f"{name} -> {pprint.pformat(data, indent=4, width=100)}\n")
        return 0


def sqlite_records(path: Path) -> list[tuple[str, Any]]:
    """(task, record) pairs of doit's sqlite3 backend, read-only."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT task_id, task_data FROM doit ORDER BY task_id").fetchall()
    except sqlite3.Error as err:
        raise InvalidCommand(f"{path}: cannot read doit's records: {err}") from None
    finally:
        conn.close()
    found = []
    for name, text in rows:
        try:
            found.append((str(name), json.loads(text)))
        except (TypeError, ValueError):
            found.append((str(name), text))
    return found
