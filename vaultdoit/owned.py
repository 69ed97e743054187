"""What vaultdoit may replace or delete: only folders it made, inside the project.

A stage's output folder is moved aside and removed when the stage rebuilds,
so it must never be a folder of the user's: it must lie inside the project
(or a folder listed in ``allowed_paths``), and either not exist yet, lie
inside ``build/``, or carry the marker a stage build leaves in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaultdoit import keys
from vaultdoit.config import ProjectConfig
from vaultdoit.errors import GraphError

MARKER = ".vaultdoit-stage.json"  # written into a stage's folder after each successful build


def inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def is_ours(folder: Path, root: Path) -> bool:
    """A folder vaultdoit may move aside or delete."""
    if not folder.exists():
        return True
    if (folder / MARKER).is_file():
        return True
    build = Path(os.path.realpath(root / "build"))
    real = Path(os.path.realpath(folder))
    return real != build and inside(real, build)


def check_output_folder(folder: Path, cfg: ProjectConfig, *, what: str, file: Any) -> None:
    """Refuse an output folder outside the project, or one that holds the user's files."""
    cfg.confine(folder, what, value=keys.relpath(folder, cfg.root), file=file)
    if not is_ours(folder, cfg.root):
        raise GraphError(f"{what} = \"{keys.relpath(folder, cfg.root)}\" already exists and was not made by a "
                         "stage build; building would replace it", file=file,
                         hint="point output_directory at a new folder (e.g. build/<stage>) or move that folder away")


def check_disjoint(outputs: Mapping[Path, str], root: Path, keep: Sequence[Path] = ()) -> None:
    """No stage's output folder may contain another stage's output or ``keep`` (state, caches)."""
    folders: dict[Path, str] = {}
    for image, name in outputs.items():
        if image.parent in folders:
            # A rebuild moves its stage's whole folder aside: the other image would go with it.
            raise GraphError(f'stages "{folders[image.parent]}" and "{name}" share the output folder '
                             f"{os.path.relpath(image.parent, root)}", hint="give each stage a folder of its own")
        folders[image.parent] = name
    for folder, name in folders.items():
        for precious in keep:
            if inside(precious, folder):
                raise GraphError(f'the output folder of stage "{name}" ({os.path.relpath(folder, root)}) '
                                 f"contains {os.path.relpath(precious, root)}, which a rebuild would remove",
                                 hint="give the stage a folder of its own, e.g. build/<profile>/stages/<stage>")
        for other, other_name in folders.items():
            if other != folder and inside(other, folder):
                raise GraphError(f'the output folder of stage "{name}" ({os.path.relpath(folder, root)}) '
                                 f'contains that of stage "{other_name}"',
                                 hint="give each stage a folder of its own, side by side")


def write_marker(folder: Path, record: dict[str, Any]) -> None:
    """Mark ``folder`` as a stage build's (and keep what decided its image there)."""
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MARKER)


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
