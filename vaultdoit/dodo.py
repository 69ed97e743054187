"""What a project's dodo.py delegates to: DOIT_CONFIG and the task generators.

A project's dodo.py is two lines (see ``vaultdoit init``); everything it
needs is computed here, from the project folder the dodo file lives in.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaultdoit import checker, config, plan, reporter, runvars, state
from vaultdoit.tasks import gen_all
from vaultdoit.tasks.common import digests


@functools.cache
def project(root: Path, profile: str | None, variables: runvars.RunVars = ()) -> plan.Project:
    """The planned project (cached: doit asks for it once per task family)."""
    return plan.load_project(root, profile, variables)


def _profile_arg() -> str | None:
    # `doit final_image profile=NAME` (doit's command-line variables).
    from doit import get_var

    value = get_var("profile")
    return str(value) if value else None


def setup(dodo_file: str) -> dict[str, Any]:
    """Return the names a dodo.py must define: DOIT_CONFIG and task_* generators."""
    from vaultdoit.cli import exit_on_error

    root = Path(dodo_file).resolve().parent
    with exit_on_error():
        run = runvars.from_doit()  # var.NAME=value, keep_failed=1
        proj = runvars.apply(project(root, _profile_arg(), run.variables), run)
        cfg = proj.config
        # doit opens its dependency DB before running any task: the folder must exist.
        # This is the one write at load time, and it only creates an empty folder.
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        # A damaged DB would be a traceback from doit: say how to repair it instead.
        state.check_db(cfg.state_dir / state.DB_NAME)
    for warning in proj.warnings:
        print(f"vaultdoit: warning: {warning}", file=sys.stderr)
    doit_config = {
        "default_tasks": ["final_image", "verify"],
        "dep_file": str(cfg.state_dir / state.DB_NAME),
        "backend": "sqlite3",
        "check_file_uptodate": checker.make_checker(digests(proj)),
        "par_type": "thread",  # the work is subprocesses; threads are enough
        "verbosity": 2,
        **reporter.doit_config(proj),  # progress, summary and report; `doit list` in build order
    }

    def task_vaultdoit() -> Iterator[dict[str, Any]]:
        yield from gen_all(proj)

    task_vaultdoit.__doc__ = "vaultdoit tasks"
    return {"DOIT_CONFIG": doit_config, "task_vaultdoit": task_vaultdoit}
