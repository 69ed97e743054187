"""Tasks that prepare inputs: build keys and the Python wheelhouse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from doit.tools import run_once

from vaultdoit import actions
from vaultdoit.plan import Project, pubkey, wheel_manifest
from vaultdoit.tasks.common import log


def keys_task(project: Project) -> dict[str, Any]:
    """SSH key pairs: the build key (removed from the image) and the access key (kept)."""
    cfg = project.config
    keys = [cfg.build_key, cfg.access_key]
    return {
        "basename": "keys",
        "doc": "create the build and access SSH keys (once)",
        "actions": [(actions.make_keys, [keys, log(project, "keys")])],
        "targets": [str(p) for k in keys for p in (k, pubkey(k))],
        "uptodate": [run_once],
    }


def wheels_task(project: Project) -> dict[str, Any] | None:
    """Download the pinned wheels once per change of the requirements file."""
    cfg = project.config
    if cfg.requirements is None:
        return None
    manifest = wheel_manifest(cfg)
    return {
        "basename": "cache",
        "name": "wheels",
        "doc": f"download the wheels pinned in {cfg.requirements.relative_to(cfg.root)} into cache/wheels",
        "actions": [(actions.download_wheels, [cfg.requirements, manifest.parent, manifest,
                                               log(project, "cache:wheels")])],
        "file_dep": [str(cfg.requirements)],
        "targets": [str(manifest)],
        "clean": True,
    }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    yield keys_task(project)
    wheels = wheels_task(project)
    if wheels is not None:
        yield wheels
