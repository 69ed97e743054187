"""doit ``uptodate`` checks: settings that decide an artifact, interrupted builds, run once.

Each check is a small object whose ``repr`` says what it checks (``doit info``
prints it when the check is false) and whose ``reason`` says, in words, why
the task must run (``vaultdoit explain``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doit.task import Task

from vaultdoit.keys import canonical, sha256_text

SETTINGS_KEY = "settings:{ident}"


class settings_changed:
    """Like doit's ``config_changed``, but stores the settings themselves.

    Keeping the full JSON (not only a digest) lets ``vaultdoit explain`` say
    which setting changed; the ``ident`` keeps two checks on one task apart.
    """

    reason = "its settings changed"

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

    def __repr__(self) -> str:
        return (f"settings_changed({self.ident}: {len(self.settings)} settings, "
                f"sha256 {sha256_text(self.text)[:12]}; `doit explain` names the changes)")


class not_interrupted:
    """False while ``marker`` exists: a build of this task was killed and must be redone."""

    reason = "the previous build was interrupted"

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self) -> bool:
        return not self.marker.exists()

    def __repr__(self) -> str:
        return f"not_interrupted(no {self.marker.name} in {self.marker.parent})"


class run_once:
    """Up to date once the task has succeeded (doit's ``run_once``, same record, readable)."""

    reason = "never run"
    KEY = "run-once"  # doit.tools.run_once's record: databases written before stay valid

    def configure_task(self, task: Task) -> None:
        task.value_savers.append(lambda: {self.KEY: True})

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        return bool(values.get(self.KEY, False))

    def __repr__(self) -> str:
        return "run_once(up to date after its first success)"


class check:
    """A named yes/no question about the world (is the proxy serving?), asked on every run."""

    def __init__(self, question: Any, label: str, reason: str) -> None:
        self.question = question
        self.label = label
        self.reason = reason

    def __call__(self) -> bool:
        return bool(self.question())

    def __repr__(self) -> str:
        return self.label


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
