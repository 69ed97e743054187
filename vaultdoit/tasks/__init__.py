"""Pure task generation: a planned Project in, doit task dicts out.

No file is written and no program runs while tasks are generated; all work
happens in the actions (vaultdoit.actions) when doit executes a task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from vaultdoit.project import Project
from vaultdoit.tasks import caches, dev, final, stages

TaskDict = dict[str, Any]


def gen_all(project: Project, variants: Sequence[str] | None = None) -> Iterator[TaskDict]:
    """Every task of the project, in a stable order. ``variants``: the variants the ``final_image``
    and ``verify`` groups cover (None: vault.toml's ``variant``)."""
    yield from caches.gen_tasks(project)
    yield from stages.gen_tasks(project)
    yield from final.gen_tasks(project, variants)
    yield from dev.gen_tasks(project)
