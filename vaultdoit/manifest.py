"""The provenance manifest written beside the final image (schema: docs/manifest.md)."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaultdoit import __version__, keys, owned, packer
from vaultdoit.model import Stage

SCHEMA = "vaultdoit.manifest/1"
PACKAGES_FILE = "dpkg-packages.txt"  # "name<TAB>version" lines, fetched by the final stage
PIP_FILE = "pip-freeze.txt"  # pip freeze output, fetched by the frameworks stage


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _pairs(path: Path, separator: str) -> dict[str, str]:
    """``name<separator>version`` lines as a sorted dict ({} if the file is absent)."""
    if not path.is_file():
        return {}
    pairs = {}
    for line in path.read_text().splitlines():
        if separator in line:
            name, version = line.split(separator, 1)
            pairs[name.strip()] = version.strip()
    return dict(sorted(pairs.items()))


def tool_versions() -> dict[str, str]:
    """Versions of the programs that made the image."""
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    versions = {
        "vaultdoit": __version__,
        "python": platform.python_version(),
        "ansible-core": version("ansible-core"),
        "doit": version("doit"),
        "qemu-img": ".".join(map(str, packer.qemu_img_version())),
    }
    try:
        versions["packer"] = ".".join(map(str, packer.packer_version()))
    except Exception:  # a project without Packer stages may not have it
        versions["packer"] = "not installed"
    return versions


def build(*, image: Path, sha256: str, compression: str, chain: list[Stage], root: Path,
          reports: Path | Sequence[Path], variant: str | None = None,
          provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest dict for ``image`` built from ``chain`` (base first). ``reports``: the folders
    the chain's stages reported into, later ones first to be read (a variant's, then the shared one);
    ``provenance`` (see provenance.record) is recorded as given."""
    stages = []
    keys_by_name = keys.chain_keys(chain, root)
    for stage in chain:
        record = owned.read_marker(stage.output.parent) or {}
        stages.append({
            "name": stage.name,
            "variant": stage.variant,
            "kind": stage.kind,
            "parent": stage.parent,
            "image": _rel(stage.output, root),
            "image_sha256": record.get("image_sha256"),
            "input_digest": keys_by_name[stage.id],
            "key": keys_by_name[stage.id],
            "pulled_from": (record.get("pulled") or {}).get("from"),
            "settings_digest": record.get("settings_digest") or keys.sha256_text(keys.canonical(stage.settings)),
            "inputs": dict(sorted((record.get("inputs") or {}).items())),
            "tools": record.get("tools") or {},
            "templates": sorted({_rel(stage.source.file, root)} if stage.source else []),
            "root_image": _rel(stage.root_image, root) if stage.root_image else None,
            "build_seconds": record.get("build_seconds"),
            "waited_seconds": record.get("waited_seconds"),
            "image_bytes": record.get("image_bytes"),
            "built_at": record.get("finished"),
        })
    data = {
        "schema": SCHEMA,
        "image": {"name": image.name, "bytes": image.stat().st_size, "sha256": sha256,
                  "compression": compression, "variant": variant},
        "stages": stages,
        "tools": tool_versions(),
        "contents": {
            "debian_packages": _pairs(report_file(reports, PACKAGES_FILE), "\t"),
            "python_packages": _pairs(report_file(reports, PIP_FILE), "=="),
        },
    }
    if provenance is not None:
        data["provenance"] = provenance
    return data


def report_file(reports: Path | Sequence[Path], name: str) -> Path:
    """``name`` in the first of the ``reports`` folders that has it (the last folder's path if none has)."""
    folders = [reports] if isinstance(reports, Path) else list(reports)
    return next((f / name for f in folders if (f / name).is_file()), folders[-1] / name)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def dump(data: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, two-space indent."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
