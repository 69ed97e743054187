"""The final image (``final_image``) and its boot test (``verify``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vaultdoit.plan import Project
from vaultdoit.bootspec import BootSpec
from vaultdoit.outputs import checksum_path, manifest_path, sbom_path, signature_path, signed_files
from vaultdoit.tasks.common import action, log, probe_spec, rel, rels, reports, stall_timeout
from vaultdoit.uptodate import settings_changed


def boot_files(project: Project) -> tuple[Path | None, Path | None]:
    """Kernel and initrd of the chain (from its bootstrapped base), if the base has them."""
    base = project.chain()[0]
    if len(base.extra_outputs) == 2:
        return base.extra_outputs[0], base.extra_outputs[1]
    return None, None


def final_outputs(project: Project) -> list[Path]:
    out = project.config.final_image
    kernel, initrd = boot_files(project)
    files = [out, checksum_path(out), manifest_path(out), sbom_path(out)]
    if project.config.signing_key is not None:
        files += [signature_path(f) for f in signed_files(out)]
    if kernel is not None:
        files.append(out.with_suffix(".vmlinuz"))
    if initrd is not None:
        files.append(out.with_suffix(".initrd.img"))
    return files


def final_image_task(project: Project) -> dict[str, Any]:
    """Flatten the stage chain ending at the top stage into one compressed image."""
    cfg = project.config
    kernel, initrd = boot_files(project)
    deps = rels(project, [project.top.output, *(p for p in (kernel, initrd) if p is not None)])
    return {
        "basename": "final_image",
        "doc": f"flatten stages {' -> '.join(s.name for s in project.chain())} into "
               f"build/final/{cfg.final_image.name} ({cfg.final.compression}) with its manifest and SBOM"
               + (", signed" if cfg.signing_key is not None else ""),
        "actions": [(action("flatten_image"), [project.top.output, cfg.final_image], {
            "kernel": kernel, "initrd": initrd, "cfg": cfg.final, "logfile": log(project, "final_image"),
            "chain": project.chain(), "root": cfg.root,
            "reports": reports(project), "signing_key": cfg.signing_key,
        })],
        "file_dep": deps,
        "targets": rels(project, final_outputs(project)),
        # Compression settings decide the file but not the stages: only this task re-runs.
        # So does signing with another key (or none).
        "uptodate": [settings_changed(asdict(cfg.final), "final"),
                     settings_changed({"signer": cfg.signer}, "signing")],
        "clean": True,
        "meta": {"vaultdoit": {"kind": "final", "image": rel(project, cfg.final_image), "top": project.top.name,
                               "log": rel(project, log(project, "final_image"))}},
    }


def verify_task(project: Project) -> dict[str, Any]:
    """Boot the final image (snapshot=on) and check it over SSH; fails the build on any failure."""
    cfg = project.config
    kernel, initrd = boot_files(project)
    out = cfg.final_image
    spec = BootSpec(
        image=out,
        kernel=out.with_suffix(".vmlinuz") if kernel else None,
        initrd=out.with_suffix(".initrd.img") if initrd else None,
        accelerator=cfg.accelerator,
        memory=cfg.verify.memory,
        user=cfg.verify.user,
        key=cfg.verify.key or cfg.access_key,
        units=cfg.verify.units,
        checks=cfg.verify.checks,
        boot_timeout=cfg.verify.boot_timeout,
        log_dir=cfg.logs_dir / (cfg.profile or "") / "verify",
        probe=probe_spec(project, (out.with_suffix(".vmlinuz"),) if kernel else ()),
        stall_timeout=stall_timeout(project),
    )
    report = verify_report(project)
    junit = report.with_name(report.stem + ".junit.xml")
    # The boot test logs in with the access key, which the keys task makes.
    key = [spec.key] if spec.key in (cfg.access_key, cfg.build_key) else []
    return {
        "basename": "verify",
        "doc": f"boot {out.name} on a throwaway snapshot and check it over SSH",
        "actions": [(action("verify_image"), [spec, report, junit])],
        "file_dep": rels(project, [*final_outputs(project), *key]),
        "targets": rels(project, [report, junit]),
        "uptodate": [settings_changed({"units": list(cfg.verify.units), "checks": list(cfg.verify.checks),
                                       "user": cfg.verify.user}, "verify")],
        "clean": True,
        "meta": {"vaultdoit": {"kind": "verify", "report": rel(project, report), "junit": rel(project, junit),
                               "log": rel(project, spec.log_dir / "serial.log")}},
    }


def verify_report(project: Project) -> Path:
    """The boot test's JSON report (its JUnit XML goes beside it)."""
    cfg = project.config
    return cfg.root / "build" / "reports" / f"verify-{cfg.image_name}.json"


def gen_tasks(project: Project) -> Iterator[dict[str, Any]]:
    yield final_image_task(project)
    yield verify_task(project)
