"""Which values are secrets, and hiding them in text meant for people (logs, reports).

The values of variables declared ``sensitive = true`` (as the planner resolved them,
per-run ``var.NAME=`` included) and every ``PKR_VAR_*`` of the environment: Packer
1.6 prints values in provisioner output, and a doit command line holds ``var.NAME=``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaultdoit.model import PackerConfig

MIN_SECRET = 4  # shorter values are no credentials, and hiding them would garble every log
HIDDEN = "<sensitive>"


def values(config: PackerConfig | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values of a build (``config``: its Packer templates as planned), sorted."""
    env = os.environ if environ is None else environ
    found: list[Any] = [config.variables.get(name) for name in config.sensitive] if config is not None else []
    found += [value for key, value in env.items() if key.startswith("PKR_VAR_")]
    texts = {v if isinstance(v, str) else json.dumps(v) for v in found if v is not None}
    return sorted(t for t in texts if len(t) >= MIN_SECRET)


def hide(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``<sensitive>`` (longer ones first: one may hold another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text
