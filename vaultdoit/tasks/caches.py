"""Tasks that prepare inputs: build keys and the Python wheelhouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaultdoit import apt_proxy
from vaultdoit.project import Project, pubkey, wheel_manifest
from vaultdoit.tasks.common import action, log, rel, rels
from vaultdoit.uptodate import check, run_once, settings_changed


def keys_task(project: Project) -> dict[str, Any]:
    """SSH key pairs: the build key (removed from the image) and the access key (kept)."""
    cfg = project.config
    keys = [cfg.build_key, cfg.access_key]
    # A team's shared keys (VAULTDOIT_BUILD_KEY, VAULTDOIT_ACCESS_KEY) are copied into place:
    # stages built on different machines then hold the same public keys, so they share keys.
    shared = {key: source for key, source in ((cfg.build_key, cfg.build_key_from),
                                              (cfg.access_key, cfg.access_key_from)) if source is not None}
    return {
        "basename": "keys",
        "doc": "create the build and access SSH keys (once), or copy the team's shared ones",
        "actions": [(action("make_keys"), [keys, log(project, "keys")], {"shared": shared})],
        "file_dep": sorted(str(source) for source in shared.values()),
        "targets": rels(project, [p for k in keys for p in (k, pubkey(k))]),
        "uptodate": [run_once()],
        "meta": {"vaultdoit": {"kind": "keys", "log": rel(project, log(project, "keys"))}},
    }


def wheels_task(project: Project) -> dict[str, Any] | None:
    """Download the pinned wheels once per change of the requirements file."""
    cfg = project.config
    if cfg.requirements is None:
        return None
    manifest = wheel_manifest(cfg)
    return {
        "basename": "cache:wheels",
        "doc": f"download the wheels pinned in {cfg.requirements.relative_to(cfg.root)} into cache/wheels",
        "actions": [(action("download_wheels"), [cfg.requirements, manifest.parent, manifest,
                                               log(project, "cache:wheels")])],
        "file_dep": [rel(project, cfg.requirements)],
        "targets": [rel(project, manifest)],
        "clean": True,
        "meta": {"vaultdoit": {"kind": "wheels", "log": rel(project, log(project, "cache:wheels")),
                               "manifest": rel(project, manifest)}},
    }


def apt_proxy_task(project: Project) -> dict[str, Any] | None:
    """Our apt-cacher-ng on loopback, started when it is not already serving."""
    proxy = apt_proxy.managed(project.apt)
    if proxy is None:
        return None

    def serving() -> bool:
        return apt_proxy.serving(proxy)

    return {
        "basename": "cache:apt",
        "doc": f"start the build's apt-cacher-ng on 127.0.0.1:{proxy.port} (cache in cache/apt)",
        "actions": [(action("start_apt_proxy"), [proxy, log(project, "cache:apt")])],
        "uptodate": [check(serving, f"serving(apt-cacher-ng on 127.0.0.1:{proxy.port}, this configuration)",
                           "the APT proxy is not running (or runs with another configuration)")],
        "meta": {"vaultdoit": {"kind": "apt", "log": rel(project, log(project, "cache:apt"))}},
    }


def unchanged(path: Path) -> check:
    """uptodate check: the ISO-store file is the one that was verified."""
    def verified() -> bool:
        from vaultdoit import iso_store

        return iso_store.is_verified(path) or not path.exists()

    return check(verified, f"verified({path.name} unchanged since its checksum was verified)",
                 f"{path.name} changed since it was verified")


def iso_tasks(project: Project) -> Iterator[dict[str, Any]]:
    """One task per distinct remote image: fetch it into cache/isos and verify it."""
    seen: set[Path] = set()
    for stage in project.stages:
        if stage.iso is None or stage.iso[2] in seen:
            continue
        url, checksum, cached = stage.iso
        seen.add(cached)
        yield {
            "basename": f"cache:iso-{cached.name}",
            "doc": f"fetch {url} into cache/isos and verify it ({checksum.split(':')[0]})",
            "actions": [(action("fetch_iso"), [url, checksum, cached.parent])],
            "targets": [rel(project, cached)],
            # The file is the cache: once present and verified it is never fetched again,
            # unless it changed since it was verified (then it is checked again).
            "uptodate": [settings_changed({"url": url, "checksum": checksum}, "iso"), unchanged(cached)],
            "meta": {"vaultdoit": {"kind": "iso", "file": rel(project, cached)}},
        }


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    yield keys_task(project)
    yield from iso_tasks(project)
    apt = apt_proxy_task(project)
    if apt is not None:
        yield apt
    wheels = wheels_task(project)
    if wheels is not None:
        yield wheels
