"""Which tasks are running, and what Ctrl-C does: one line naming what stopped, exit 130.

doit lets KeyboardInterrupt escape only after its runner's ``finally`` has
saved the dependency database, so tasks that finished before Ctrl-C stay up
to date. The hook installed here then stops the programs that tasks in other
threads still run (``-n N -P thread``: only the main thread sees Ctrl-C),
waits for those tasks to put their previous images back, prints one line
instead of a traceback and exits 130.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from doit.exceptions import TaskFailed

from vaultdoit import proc
from vaultdoit.exits import EXIT_INTERRUPTED
# How long interrupted tasks get to stop their programs and restore their output.
SETTLE = proc.STOP_GRACE + proc.TREE_STOP + 10

_RUNNING: dict[str, tuple[str, ...]] = {}  # task name -> its targets, in start order
_STOPPED: dict[str, tuple[str, ...]] = {}  # tasks that Ctrl-C interrupted in their own thread
_COND = threading.Condition()
_listeners: list[Callable[[list[str]], None]] = []
_installed = False


def running() -> list[str]:
    """Names of the tasks whose actions run now."""
    with _COND:
        return list(_RUNNING)


def on_change(listener: Callable[[list[str]], None]) -> None:
    """Call ``listener(running tasks)`` whenever a task starts or ends (the lock's holder record)."""
    _listeners.append(listener)


def _changed() -> None:
    names = running()
    for listener in _listeners:
        listener(names)


def tracked(task: dict[str, Any], before: Callable[[], TaskFailed | None] | None = None) -> dict[str, Any]:
    """``task`` with each Python action wrapped: registered as running, ``before`` checked first."""
    basename = task.get("basename", "vaultdoit")
    name = f"{basename}:{task['name']}" if task.get("name") else basename
    targets = tuple(str(t) for t in task.get("targets", ()))

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def action(*args: Any, **kwargs: Any) -> Any:
            with _COND:
                _RUNNING[name] = targets
            _changed()
            try:
                failed = before() if before is not None else None
                return failed if failed is not None else func(*args, **kwargs)
            except KeyboardInterrupt:
                with _COND:
                    _STOPPED[name] = targets
                raise
            finally:
                with _COND:
                    _RUNNING.pop(name, None)
                    _COND.notify_all()
                _changed()

        return action

    actions = []
    for item in task.get("actions") or []:
        if isinstance(item, tuple) and item and callable(item[0]):
            item = (wrap(item[0]), *item[1:])
        elif callable(item) and not isinstance(item, (str, list)):
            item = wrap(item)
        actions.append(item)
    return {**task, "actions": actions}


def _what(name: str, targets: tuple[str, ...]) -> str:
    """What became of one interrupted task."""
    if name.startswith(("stage:", "final_image")):
        if targets and Path(targets[0]).exists():
            return f"{name} stopped, previous image kept"
        return f"{name} stopped, no image written"
    if name == "verify" or name.startswith("verify:"):
        return f"{name} stopped, boot test not finished"
    return f"{name} stopped, it runs again next time"


def message(stopped: dict[str, tuple[str, ...]]) -> str:
    """The one line printed on Ctrl-C."""
    if not stopped:
        return "vaultdoit: interrupted: no task was running, finished tasks stay up to date"
    return "vaultdoit: interrupted: " + "; ".join(_what(n, t) for n, t in stopped.items())


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if not issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    with _COND:
        stopped = {**_STOPPED, **_RUNNING}
    # Tasks in worker threads never saw the KeyboardInterrupt: stop their programs
    # so that they fail and restore their previous output, and wait for that. Builds
    # waiting for room beside other VMs give up rather than start one.
    from vaultdoit import resources

    resources.guard().close()
    proc.stop_all()
    with _COND:
        _COND.wait_for(lambda: not _RUNNING, timeout=SETTLE)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.write(2, (message(stopped) + "\n").encode())
    # os._exit: doit's worker threads may still wait on their queues.
    os._exit(EXIT_INTERRUPTED)


def install() -> None:
    """Make Ctrl-C during a doit run print one line and exit 130 instead of a traceback."""
    global _installed
    if not _installed:
        sys.excepthook = _hook
        _installed = True
