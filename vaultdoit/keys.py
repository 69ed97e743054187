"""Stage keys: what decides a stage's image, as text that is the same wherever the project lives.

A key is a sha256 over the stage's resolved settings, the contents of its
input files (by path relative to the project), its parent's key and the tool
versions that decide the image. It never holds an absolute path of the
project, a build-time setting (memory, CPUs, the accelerator) or a secret in
clear, so a project moved, cloned or restored elsewhere has the same keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vaultdoit.model import Unknown

PROJECT = "<project>"  # stands for the project folder inside settings
KEY_FORMAT = 1  # bump when what enters a key changes: every stage rebuilds once


def canonical(value: Any) -> str:
    """Stable JSON text (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redact(secret: str) -> str:
    """What a secret value turns into inside settings: a digest, never the value."""
    return f"<sensitive:{sha256_text(secret)[:16]}>"


def normalize(value: Any, root: Path, secrets: Iterable[str] = ()) -> Any:
    """``value`` as JSON-ready data for a key: the project folder as ``<project>``,
    Unknown values by their expression text, secrets replaced by a digest."""
    root_text = str(root)
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)

    def text(item: str) -> str:
        for secret in hidden:
            if secret in item:
                item = item.replace(secret, redact(secret))
        if root_text in item:
            item = item.replace(root_text + os.sep, PROJECT + "/").replace(root_text, PROJECT)
        return item

    def walk(item: Any) -> Any:
        if isinstance(item, Unknown):
            return {"unresolved": text(item.text)}
        if isinstance(item, Path):
            return text(str(item))
        if isinstance(item, str):
            return text(item)
        if isinstance(item, Mapping):
            return {text(str(k)): walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        return item

    return walk(value)


def relpath(path: Path, root: Path) -> str:
    """``path`` relative to the project when inside it (the form doit and keys store)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def major_minor(version: str) -> str:
    """"1.6.6" -> "1.6": patch releases must not invalidate a team's cache."""
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0].isdigit() else version


def stage_key(*, kind: str, settings: Any, inputs: Mapping[str, str], parent_key: str | None,
              tools: Mapping[str, str]) -> str:
    """The content key of a stage: everything that decides its image."""
    material = canonical({"format": KEY_FORMAT, "kind": kind, "settings": settings, "inputs": dict(inputs),
                          "parent": parent_key, "tools": dict(tools)})
    return sha256_text(material)
