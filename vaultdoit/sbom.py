"""The image's SBOM: a CycloneDX 1.6 JSON document beside the manifest (``<image>.cdx.json``).

Scanners and inventories (grype, trivy, Dependency-Track) read it. It is
made from the manifest, so both say the same: the image file with its
digest (the described component), the distribution as an operating-system
component whose dependencies are the image's Debian packages, the Python
packages, the stage chain with each stage's key, image digest and input
files, the tools that built it, and the provenance (git commit, dirty or
not, build host) as properties.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

SPEC = SchemaVersion.V1_6
OS_RELEASE_FILE = "os-release"  # /etc/os-release of the image, fetched by the final stage into the reports
NAMESPACE = uuid.UUID("6f0d3a52-8a0e-4d1b-9c57-1e1f4a8f3c2b")  # serial numbers: uuid5 of the image digest
PROPERTY = "vaultdoit:"  # prefix of our property names


def _sha256(hex_or_prefixed: str | None) -> list[HashType]:
    if not hex_or_prefixed:
        return []
    return [HashType(alg=HashAlgorithm.SHA_256, content=hex_or_prefixed.split(":", 1)[-1])]


def _props(prefix: str, values: Mapping[str, Any]) -> list[Property]:
    """Properties ``vaultdoit:<prefix><key>`` for the values that are set (booleans as true/false)."""
    found = []
    for key, value in values.items():
        if value is None or value == "" or isinstance(value, (dict, list)):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        found.append(Property(name=f"{PROPERTY}{prefix}{key}", value=text))
    return found


def pypi_name(name: str) -> str:
    """A PyPI project name as package URLs spell it (PEP 503: lower case, runs of -_. as -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distro(os_release: Mapping[str, str], debian_packages: Mapping[str, str]) -> tuple[str, str | None]:
    """(package URL namespace, VERSION_ID) of the image's distribution: from its os-release, else
    guessed from base-files (Ubuntu's version says ubuntu), else Debian."""
    ident = os_release.get("ID", "").lower()
    if ident:
        return ident, os_release.get("VERSION_ID") or None
    base_files = debian_packages.get("base-files", "")
    return ("ubuntu" if "ubuntu" in base_files else "debian"), None


def _deb(name: str, version: str, namespace: str, version_id: str | None) -> Component:
    qualifiers = {"distro": f"{namespace}-{version_id}"} if version_id else {}
    purl = PackageURL(type="deb", namespace=namespace, name=name, version=version, qualifiers=qualifiers)
    return Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=purl.to_string())


def _pypi(name: str, version: str) -> Component:
    purl = PackageURL(type="pypi", name=pypi_name(name), version=version)
    return Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=purl.to_string())


def _stage(stage: Mapping[str, Any]) -> Component:
    """A stage's image: its key and how it was made as properties, its input files inside it."""
    name = str(stage["name"])
    inputs = [Component(type=ComponentType.FILE, name=path, hashes=_sha256(str(digest)),
                        bom_ref=f"stage:{name}:input:{path}")
              for path, digest in sorted((stage.get("inputs") or {}).items())]
    props = _props("stage:", {"key": stage.get("input_digest"), "kind": stage.get("kind"),
                              "parent": stage.get("parent"), "settings_digest": stage.get("settings_digest"),
                              "image": stage.get("image"), "built_at": stage.get("built_at"),
                              "build_seconds": stage.get("build_seconds")})
    props += _props("stage:tool:", stage.get("tools") or {})
    return Component(type=ComponentType.FILE, name=f"stage:{name}", version=str(stage.get("input_digest") or ""),
                     description=f"vaultdoit stage {name} (version: its key)", hashes=_sha256(stage.get("image_sha256")),
                     bom_ref=f"stage:{name}", properties=props, components=inputs)


def _tools(manifest: Mapping[str, Any]) -> ToolRepository:
    """What built the image: the manifest's tools and the build host's packages."""
    tools = dict(manifest.get("tools") or {})
    host = ((manifest.get("provenance") or {}).get("build_host") or {}).get("packages") or {}
    components = [Component(type=ComponentType.APPLICATION, name=name, version=str(version))
                  for name, version in sorted(tools.items())]
    components += [Component(type=ComponentType.APPLICATION, name=name, version=str(version), group="build-host",
                             bom_ref=f"build-host:{name}")
                   for name, version in sorted(host.items()) if name not in tools]
    return ToolRepository(components=components)


def _provenance(manifest: Mapping[str, Any]) -> list[Property]:
    prov = manifest.get("provenance") or {}
    git = prov.get("git") or {}
    host = prov.get("build_host") or {}
    props = _props("git:", {"commit": git.get("commit") or "none", "dirty": git.get("dirty"),
                            "changes": git.get("changes"), "reason": git.get("reason")})
    props += [Property(name=f"{PROPERTY}git:changed", value=path) for path in git.get("changed") or []]
    props += _props("build_host:", {k: host.get(k) for k in ("os", "kernel", "machine")})
    props += _props("image:", {"compression": (manifest.get("image") or {}).get("compression"),
                               "manifest_schema": manifest.get("schema")})
    return props


def build(manifest: Mapping[str, Any], *, files: Mapping[str, str] = {}, os_release: Mapping[str, str] = {},
          timestamp: datetime | None = None) -> Bom:
    """The SBOM of the image the ``manifest`` describes; ``files`` are the other files shipped
    with it (kernel, initrd: name -> sha256)."""
    image = manifest["image"]
    contents = manifest.get("contents") or {}
    debs: Mapping[str, str] = contents.get("debian_packages") or {}
    wheels: Mapping[str, str] = contents.get("python_packages") or {}
    namespace, version_id = distro(os_release, debs)

    subject = Component(type=ComponentType.FILE, name=str(image["name"]), hashes=_sha256(image["sha256"]),
                        bom_ref="image", description="VM disk image (qcow2) built by vaultdoit",
                        properties=_props("image:", {"bytes": image.get("bytes")}))
    bom = Bom(serial_number=uuid.uuid5(NAMESPACE, str(image["sha256"])),
              metadata=BomMetaData(component=subject, tools=_tools(manifest), properties=_provenance(manifest),
                                   timestamp=timestamp or datetime.now(timezone.utc)))

    packages = [_deb(name, version, namespace, version_id) for name, version in sorted(debs.items())]
    system = Component(type=ComponentType.OPERATING_SYSTEM, name=namespace, version=version_id,
                       description=os_release.get("PRETTY_NAME"), bom_ref="os")
    python = [_pypi(name, version) for name, version in sorted(wheels.items())]
    shipped = [Component(type=ComponentType.FILE, name=name, hashes=_sha256(digest), bom_ref=f"file:{name}")
               for name, digest in sorted(files.items())]
    stages = [_stage(stage) for stage in manifest.get("stages") or []]
    for component in [system, *packages, *python, *shipped, *stages]:
        bom.components.add(component)

    # The distribution holds its packages (how trivy ties them to it); the image holds the
    # distribution, the Python packages, the files shipped with it and its top stage; each
    # stage was made on its parent.
    bom.register_dependency(system, packages)
    bom.register_dependency(subject, [system, *python, *shipped, *stages[-1:]])
    for parent, child in zip(stages, stages[1:]):
        bom.register_dependency(child, [parent])
    return bom


def document(manifest: Mapping[str, Any], *, files: Mapping[str, str], os_release: Path) -> str:
    """The SBOM's text for ``manifest``; ``os_release`` is the image's, fetched into the reports
    folder by the final stage (a chain that does not fetch it gets its distribution guessed)."""
    from vaultdoit.provenance import os_release as read_os_release

    return dump(build(manifest, files=files, os_release=read_os_release(os_release)))


def dump(bom: Bom) -> str:
    """The document as JSON text (sorted keys, two-space indent: two SBOMs diff cleanly)."""
    data = json.loads(JsonV1Dot6(bom).output_as_string())
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def packages(document: Mapping[str, Any], purl_type: str) -> dict[str, str]:
    """name -> version of the components of a SBOM document whose package URL has ``purl_type``."""
    found = {}
    for component in _walk(document.get("components") or []):
        purl = str(component.get("purl") or "")
        if purl.startswith(f"pkg:{purl_type}/"):
            found[str(component["name"])] = str(component.get("version"))
    return dict(sorted(found.items()))


def _walk(components: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])


def image_digest(document: Mapping[str, Any]) -> str | None:
    """The SHA-256 the SBOM gives for the image it describes."""
    component = (document.get("metadata") or {}).get("component") or {}
    for item in component.get("hashes") or []:
        if item.get("alg") == "SHA-256":
            return str(item.get("content"))
    return None
