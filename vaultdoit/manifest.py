"""The provenance manifest written beside the final image (schema: docs/manifest.md)."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from vaultdoit import __version__, packer
from vaultdoit.model import Stage
from vaultdoit.uptodate import canonical

SCHEMA = "vaultdoit.manifest/1"
PACKAGES_FILE = "dpkg-packages.txt"  # "name<TAB>version" lines, fetched by the final stage
PIP_FILE = "pip-freeze.txt"  # pip freeze output, fetched by the frameworks stage


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def stage_key(stage: Stage, input_digests: dict[str, str], parent_key: str | None) -> str:
    """A stage's input digest: its settings, its input files' contents and its parent's key."""
    material = canonical({"settings": stage.settings, "inputs": input_digests, "parent": parent_key})
    return hashlib.sha256(material.encode()).hexdigest()


def record_build(record: Path, *, seconds: float, image: Path, apt: Any = None) -> None:
    """Remember how long a stage took, how big its image is and its APT proxy traffic."""
    record.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"build_seconds": round(seconds, 1), "image_bytes": image.stat().st_size,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if apt is not None:
        data["apt"] = {"upstream_bytes": apt.upstream_bytes, "upstream_files": apt.upstream_files,
                       "upstream_debs": apt.upstream_debs, "served_bytes": apt.served_bytes,
                       "served_files": apt.served_files}
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    tmp.replace(record)


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
          records: Path, reports: Path) -> dict[str, Any]:
    """The manifest dict for ``image`` built from ``chain`` (base first)."""
    stages = []
    parent_key: str | None = None
    for stage in chain:
        digests = {_rel(p, root): file_sha256(p) for p in stage.inputs if p.is_file()}
        key = stage_key(stage, digests, parent_key)
        record = _read_json(records / f"{stage.name}.json")
        stages.append({
            "name": stage.name,
            "kind": stage.kind,
            "parent": stage.parent,
            "image": _rel(stage.output, root),
            "input_digest": key,
            "settings_digest": hashlib.sha256(canonical(stage.settings).encode()).hexdigest(),
            "inputs": dict(sorted(digests.items())),
            "templates": sorted({_rel(stage.source.file, root)} if stage.source else []),
            "build_seconds": record.get("build_seconds"),
            "image_bytes": record.get("image_bytes"),
            "built_at": record.get("finished"),
        })
        parent_key = key
    return {
        "schema": SCHEMA,
        "image": {"name": image.name, "bytes": image.stat().st_size, "sha256": sha256,
                  "compression": compression},
        "stages": stages,
        "tools": tool_versions(),
        "contents": {
            "debian_packages": _pairs(reports / PACKAGES_FILE, "\t"),
            "python_packages": _pairs(reports / PIP_FILE, "=="),
        },
    }


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def dump(data: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, two-space indent."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
