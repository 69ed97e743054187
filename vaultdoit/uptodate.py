"""doit ``uptodate`` callables: settings that decide an artifact, and interrupted builds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.task import Task

from vaultdoit.keys import canonical

SETTINGS_KEY = "settings:{ident}"


class settings_changed:
    """Like doit's ``config_changed``, but stores the settings themselves.

    Keeping the full JSON (not only a digest) lets ``vaultdoit explain`` say
    which setting changed; the ``ident`` keeps two checks on one task apart.
    """

    def __init__(self, settings: dict[str, Any], ident: str = "image") -> None:
        self.settings = settings
        self.ident = ident
        self.text = canonical(settings)

    @property
    def key(self) -> str:
        return SETTINGS_KEY.format(ident=self.ident)

    def configure_task(self, task: Task) -> None:
        task.value_savers.append(lambda: {self.key: self.text})

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        return values.get(self.key) == self.text


def not_interrupted(marker: Path) -> Callable[[], bool]:
    """False while ``marker`` exists: a build of this task was killed and must be redone."""

    def check() -> bool:
        return not marker.exists()

    check.__name__ = f"not_interrupted({marker.name})"
    return check


def settings_diff(old_text: str | None, new: dict[str, Any]) -> list[str]:
    """Human lines describing how ``new`` differs from the stored JSON ``old_text``."""
    if old_text is None:
        return ["no settings recorded (never built with this version)"]
    old = json.loads(old_text)
    lines: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                sub = f"{path}.{key}" if path else str(key)
                if key not in a:
                    lines.append(f"setting added: {sub} = {json.dumps(b[key])}")
                elif key not in b:
                    lines.append(f"setting removed: {sub} (was {json.dumps(a[key])})")
                else:
                    walk(a[key], b[key], sub)
        elif a != b:
            lines.append(f"setting changed: {path}: {json.dumps(a)} -> {json.dumps(b)}")

    walk(old, json.loads(canonical(new)), "")
    return lines
