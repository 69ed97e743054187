"""What `vaultdoit cache status` reports: each cache's location, size and entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaultdoit import apt_proxy, owned
from vaultdoit.project import Project, wheel_manifest


def _size(folder: Path) -> dict[str, Any]:
    total, files = apt_proxy.disk_usage(folder) if folder.exists() else (0, 0)
    return {"path": str(folder), "bytes": total, "files": files}


def collect(project: Project) -> dict[str, Any]:
    """A JSON-ready description of every cache of the project."""
    cfg = project.config
    wheels = _size(cfg.cache_dir / "wheels")
    manifest = wheel_manifest(cfg)
    wheels["entries"] = len(json.loads(manifest.read_text())["wheels"]) if manifest.exists() else 0
    proxy = apt_proxy.AptProxy(cfg.cache_dir / "apt", cfg.apt_proxy_port)
    apt = _size(proxy.data_dir)
    apt["mode"] = cfg.apt_proxy
    apt["running"] = apt_proxy.healthy(proxy)
    apt["url"] = proxy.host_url if apt["running"] else None
    total = apt_proxy.traffic(proxy)
    apt["all_time"] = {"upstream_bytes": total.upstream_bytes, "served_bytes": total.served_bytes}
    stages = {}
    for stage in project.stages:
        data = owned.read_marker(stage.output.parent)
        if data is not None:
            if data.get("apt"):
                stages[stage.id] = {**data["apt"], "finished": data.get("finished")}
    apt["last_build_per_stage"] = stages
    from vaultdoit import remote

    shared = remote.spec(cfg)
    pulled = {stage.id: (owned.read_marker(stage.output.parent) or {}).get("pulled") for stage in project.stages}
    return {
        "wheels": wheels,
        "apt": apt,
        "packer": _size(cfg.cache_dir / "packer"),
        "isos": _size(cfg.cache_dir / "isos"),
        "remote": {"repository": shared.repository, "push": shared.push, "chunk_bytes": shared.chunk_size,
                   "pulled": {name: p["from"] for name, p in pulled.items() if isinstance(p, dict)}}
        if shared else None,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def render(report: dict[str, Any]) -> str:
    """Human-readable lines."""
    w, a = report["wheels"], report["apt"]
    lines = [
        f"wheels  {w['path']}: {_mib(w['bytes'])}, {w['entries']} wheels",
        f"apt     {a['path']}: {_mib(a['bytes'])}, {a['files']} files, "
        + (f"serving on {a['url']}" if a["running"] else f"not running (mode: {a['mode']})"),
    ]
    for name, t in a["last_build_per_stage"].items():
        hits = t["served_files"] - t["upstream_files"]
        lines.append(f"          stage {name} (last build {t['finished']}): {t['served_files']} requests, "
                     f"{max(hits, 0)} from cache, {t['upstream_files']} from upstream "
                     f"({_mib(t['upstream_bytes'])} of {_mib(t['served_bytes'])}), {t['upstream_debs']} .deb upstream")
    for key in ("packer", "isos"):
        c = report[key]
        lines.append(f"{key:<7} {c['path']}: {_mib(c['bytes'])}, {c['files']} files")
    r = report.get("remote")
    if r is None:
        lines.append("remote  none (set remote_cache in vault.toml or VAULTDOIT_REMOTE_CACHE to share stages)")
    else:
        lines.append(f"remote  {r['repository']}: " + ("pulls, and pushes the stages built here" if r["push"]
                                                       else "pulls only (pushing is off here)"))
        for name, source in r["pulled"].items():
            lines.append(f"          stage {name}: pulled from {source}")
    return "\n".join(lines)


def verify(project: Project) -> list[tuple[Path, str | None]]:
    """Re-hash the ISO store and the wheelhouse: (file, problem or None) for each file."""
    from vaultdoit import checker, iso_store

    cfg = project.config
    results = iso_store.verify_all(cfg.cache_dir / "isos")
    manifest = wheel_manifest(cfg)
    if manifest.is_file():
        for name, digest in sorted(json.loads(manifest.read_text()).get("wheels", {}).items()):
            wheel = manifest.parent / name
            if not wheel.is_file():
                results.append((wheel, "missing"))
                continue
            got = checker.hash_file(wheel)[0]
            results.append((wheel, None if got == digest else f"expected {digest}, got {got}"))
    return results
