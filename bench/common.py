"""Shared by the benchmark scripts: a throwaway copy of this project to build in."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("dodo.py", "vault.toml", "packer", "ansible", "python")


def copy_project(root: Path, apt_proxy_port: int | None = None) -> Path:
    """Copy the project's sources (no build/, no cache/) to ``root``; optionally its own proxy port."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, root / name)
    if apt_proxy_port is not None:
        toml = root / "vault.toml"
        toml.write_text(toml.read_text().replace('accelerator = "auto"',
                                                 f'accelerator = "auto"\napt_proxy_port = {apt_proxy_port}'))
    return root
