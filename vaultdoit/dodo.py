"""What a project's dodo.py delegates to: DOIT_CONFIG and the task generators.

A project's dodo.py is two lines (see ``vaultdoit init``); everything it
needs is computed here, from the project folder the dodo file lives in.
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaultdoit import checker, depdb, interrupt, lock, plancache, reporter, runvars, state
from vaultdoit.exits import exit_on_error
from vaultdoit.project import Project
from vaultdoit.tasks import gen_all
from vaultdoit.tasks.common import digests


@functools.cache
def project(root: Path, profile: str | None, variables: runvars.RunVars = ()) -> Project:
    """The planned project: from the last run's plan while nothing it read has changed."""
    kept = root / "build" / ".vaultdoit-plans" / f"{profile or '-'}{runvars.suffix(variables)}.pickle"
    return plancache.cached(kept, lambda: _plan(root, profile, variables))


def _plan(root: Path, profile: str | None, variables: runvars.RunVars) -> Project:
    from vaultdoit import plan  # the planner, with its readers: only when no kept plan fits

    return plan.load_project(root, profile, variables)


def _var(name: str) -> str | None:
    # `doit final_image profile=NAME lock=fail` (doit's command-line variables).
    from doit import get_var

    value = get_var(name)
    return str(value) if value else None


def _profile_arg() -> str | None:
    return _var("profile")


VARIANT_ENV = "VAULTDOIT_VARIANT"


def _variants(proj: Project) -> tuple[str, ...] | None:
    """The variants the final_image and verify groups cover, from ``variant=`` on doit's command
    line or VAULTDOIT_VARIANT (None: vault.toml's ``variant``)."""
    import os

    from vaultdoit.variants import choose

    given = _var("variant")
    if given is not None:
        return choose(proj.variants, given, source=" (variant= on the command line)")
    if os.environ.get(VARIANT_ENV):
        return choose(proj.variants, os.environ[VARIANT_ENV], source=f" (from {VARIANT_ENV})")
    return None


def _take_lock(root: Path) -> lock.BuildLock | None:
    """The project's build lock when this doit command changes the build (not list, info, ...)."""
    args = sys.argv[1:]
    if not lock.takes_lock(lock.doit_command(args)):
        return None
    build_lock = lock.BuildLock(root)
    # Others read the lock's file: per-run variables' values stay out (one may be sensitive,
    # which is not known before the templates are read).
    shown = [a.split("=", 1)[0] + "=…" if a.startswith(runvars.PREFIX) and "=" in a else a for a in args]
    build_lock.acquire(" ".join([Path(sys.argv[0]).name, *shown]), wait=lock.mode(_var("lock")) == "wait")
    return build_lock


def _check_state_dir(state_dir: Path, *, write: bool) -> None:
    """Fail now, with one line, where doit would fail opening its database (exit 3, a traceback)."""
    # doit opens its dependency DB before running any task: the folder must exist.
    state_dir.mkdir(parents=True, exist_ok=True)
    if write:
        try:
            with tempfile.TemporaryFile(dir=state_dir, prefix=".probe-"):
                pass
        except OSError as err:  # name the folder, not the probe
            raise OSError(err.errno, err.strerror, str(state_dir)) from None
    db = state_dir / state.DB_NAME
    if db.exists():
        with db.open("r+b" if write else "rb"):
            pass


def _check_inputs(paths: list[str]) -> Any:
    """Open every input before the task's work starts: an unreadable file fails in seconds, not after a VM build."""
    from vaultdoit.actions import task_action

    return task_action(checker.check_readable)(paths)


def _guard(task: dict[str, Any]) -> dict[str, Any]:
    deps = [str(d) for d in task.get("file_dep", ())]
    return interrupt.tracked(task, before=functools.partial(_check_inputs, deps))


@functools.cache
def _skip_last_collection() -> None:
    """At exit, leave every object to the OS instead of a last full garbage collection.

    Python's shutdown walks every object once more to free cycles; on a no-op run that pass
    costs as much as vaultdoit's own work, for memory the OS takes back anyway. Nothing of
    ours needs a finalizer then: files and the database are closed where they are used.
    """
    atexit.register(gc.freeze)


def setup(dodo_file: str) -> dict[str, Any]:
    """Return the names a dodo.py must define: DOIT_CONFIG and task_* generators.

    Commands that change the build take the project's lock first (a second
    build waits, or fails with ``lock=fail``) and make Ctrl-C print one line.
    """
    root = Path(dodo_file).resolve().parent
    _skip_last_collection()
    with exit_on_error():
        run = runvars.from_doit()  # var.NAME=value, keep_failed=1
        proj = runvars.apply(project(root, _profile_arg(), run.variables), run)
        cfg = proj.config
        chosen = _variants(proj)
        build_lock = _take_lock(root)
        if build_lock is not None:
            interrupt.install()
            depdb.guard()
            interrupt.on_change(lambda names: build_lock.note(", ".join(names) or None))
        _check_state_dir(cfg.state_dir, write=build_lock is not None)
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
        for task in gen_all(proj, chosen):
            yield _guard(task)

    task_vaultdoit.__doc__ = "vaultdoit tasks"
    return {"DOIT_CONFIG": doit_config, "task_vaultdoit": task_vaultdoit}
