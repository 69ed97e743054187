"""Pure task generation: a planned Project in, doit task dicts out.

No file is written and no program runs while tasks are generated; all work
happens in the actions (vaultdoit.actions) when doit executes a task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vaultdoit.plan import Project
from vaultdoit.tasks import caches, final, stages

TaskDict = dict[str, Any]


def gen_all(project: Project) -> Iterator[TaskDict]:
    """Every task of the project, in a stable order."""
    yield from caches.gen_tasks(project)
    yield from stages.gen_tasks(project)
    yield from final.gen_tasks(project)
