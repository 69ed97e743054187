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
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vaultdoit.model import Stage, Unknown

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


def normalize(value: Any, root: Path, secrets: Iterable[str] = (), places: Mapping[str, str] | None = None) -> Any:
    """``value`` as JSON-ready data for a key: the project folder as ``<project>``,
    Unknown values by their expression text, secrets replaced by a digest, and the
    folders in ``places`` (absolute path -> placeholder: where a build writes its logs
    and reports) by their placeholder, so they decide no key."""
    root_text = str(root)
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)
    # A folder counts only as a whole path: /p/build/logs/mini is not a prefix of /p/build/logs/mini-2.
    folders = [(re.compile(re.escape(folder) + r"(?![\w.-])"), placeholder) for folder, placeholder
               in sorted((places or {}).items(), key=lambda item: len(item[0]), reverse=True)]

    def text(item: str) -> str:
        for secret in hidden:
            if secret in item:
                item = item.replace(secret, redact(secret))
        for pattern, placeholder in folders:
            item = pattern.sub(placeholder, item)
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


# --------------------------------------------------------------------------- computing a stage's key
# (reads files: used by the build actions, the manifest and `vaultdoit explain`)


def input_digests(stage: Stage, root: Path, digest_cache: Path | None = None) -> dict[str, str]:
    """sha256 of each input by its path relative to the project; an ISO-store file by its checksum.

    Reading every input here, before any VM starts, also surfaces unreadable
    files at once (OSError names the path).
    """
    from vaultdoit import checker

    cache = checker.DigestCache(digest_cache) if digest_cache is not None else None
    found: dict[str, str] = {}
    for path in stage.inputs:
        if stage.iso is not None and path == stage.iso[2] and stage.iso[1].lower() not in ("", "none") \
                and not stage.iso[1].startswith("file:"):
            found[relpath(path, root)] = stage.iso[1].lower()  # keyed by what the template promises
            continue
        st = os.stat(path)
        if cache is not None and st.st_size >= checker.BIG_DEFAULT:
            found[relpath(path, root)] = checker.cached_digest(cache, path, st)
        else:
            found[relpath(path, root)] = checker.hash_file(path)[0]
    return found


def tool_versions(stage: Stage) -> dict[str, str]:
    """The tools whose major.minor decides a stage's image (a patch update must not rebuild)."""
    from vaultdoit import packer

    tools = {"qcow2": "1.1"}  # the qcow2 compat level qemu-img writes
    if stage.kind == "packer":
        tools["packer"] = major_minor(".".join(map(str, packer.packer_version())))
        if stage.source is not None and any(p.type in ("ansible", "ansible-local")
                                            for p in stage.source.provisioners):
            tools["ansible-core"] = major_minor(_dist_version("ansible-core"))
    else:
        tools[stage.kind] = major_minor(packer.tool_version(stage.kind))
    return tools


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def compute(stage: Stage, parent_key: str | None, root: Path, digest_cache: Path | None = None) -> dict[str, Any]:
    """The key record of ``stage``: its key and what went into it."""
    inputs = input_digests(stage, root, digest_cache)
    tools = tool_versions(stage)
    return {
        "key": stage_key(kind=stage.kind, settings=stage.settings, inputs=inputs, parent_key=parent_key,
                         tools=tools),
        "parent_key": parent_key,
        "settings_digest": sha256_text(canonical(stage.settings)),
        "inputs": inputs,
        "tools": tools,
    }


def chain_keys(chain: Sequence[Stage], root: Path, digest_cache: Path | None = None) -> dict[str, str]:
    """The key of each stage of ``chain`` (base first), by stage id: the one recorded beside its
    image when there is one (what was really built), else computed from the plan."""
    from vaultdoit import owned

    found: dict[str, str] = {}
    parent: str | None = None
    for stage in chain:
        marker = owned.read_marker(stage.output.parent)
        if marker is not None and isinstance(marker.get("key"), str) and marker.get("stage") == stage.id:
            key = str(marker["key"])
        else:
            key = compute(stage, parent, root, digest_cache)["key"]
        found[stage.id] = key
        parent = key
    return found


def planned_keys(stages: Sequence[Stage], root: Path, digest_cache: Path | None = None) -> dict[str, str]:
    """The key every stage would be built for now, from today's inputs (``stages`` parents first), by id."""
    found: dict[str, str] = {}
    for stage in stages:
        parent = found[stage.parent] if stage.parent else None
        found[stage.id] = compute(stage, parent, root, digest_cache)["key"]
    return found
