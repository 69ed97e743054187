"""The final images (``final_image``) and their boot tests (``verify``).

One image: ``final_image`` and ``verify``. Several (variants, or several leaves
of the stage graph): ``final_image:<image>`` and ``verify:<image>`` for each, as
top-level tasks so plain ``doit list`` shows them, and ``final_image`` and
``verify`` as groups over the selected images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vaultdoit.project import Project
from vaultdoit.outputs import (checksum_path, initrd_path, kernel_path, manifest_path, sbom_path, signature_path,
                               signed_files)
from vaultdoit.model import Image, Stage
from vaultdoit.tasks.common import Later, action, digests, log, rel, rels, reports
from vaultdoit.uptodate import settings_changed


def boot_files(project: Project, image: Image | None = None) -> tuple[Path | None, Path | None]:
    """Kernel and initrd of the image's chain (see chain_boot_files)."""
    return chain_boot_files(project, project.stage(image.top) if image else None)


def chain_boot_files(project: Project, stage: Stage | None) -> tuple[Path | None, Path | None]:
    """Kernel and initrd of the chain ending at ``stage`` (default: the top), from its
    bootstrapped base, if the base has them."""
    base = project.chain(stage)[0]
    if len(base.extra_outputs) == 2:
        return base.extra_outputs[0], base.extra_outputs[1]
    return None, None


def final_path(project: Project, image: Image | None = None) -> Path:
    """The final image file of ``image`` (default: the first)."""
    return project.config.paths.final_image((image or project.images[0]).name)


def final_outputs(project: Project, image: Image | None = None) -> list[Path]:
    image = image or project.images[0]
    out = final_path(project, image)
    kernel, initrd = boot_files(project, image)
    files = [out, checksum_path(out), manifest_path(out), sbom_path(out)]
    if project.config.signing_key is not None:
        files += [signature_path(f) for f in signed_files(out)]
    if kernel is not None:
        files.append(kernel_path(out))
    if initrd is not None:
        files.append(initrd_path(out))
    return files


def _report_folders(project: Project, image: Image) -> list[Path]:
    """Where the image's stages reported: its variant's folder first, then the shared one."""
    return [reports(project, image.variant), reports(project)] if image.variant else [reports(project)]


def final_image_task(project: Project, image: Image | None = None) -> dict[str, Any]:
    """Flatten the stage chain ending at the image's top stage into one compressed image."""
    cfg = project.config
    image = image or project.images[0]
    top = project.stage(image.top)
    chain = project.chain(top)
    out = final_path(project, image)
    kernel, initrd = boot_files(project, image)
    task = image.task("final_image")
    deps = rels(project, [top.output, *(p for p in (kernel, initrd) if p is not None)])
    return {
        "basename": task,
        "doc": f"flatten stages {' -> '.join(s.id for s in chain)} into "
               f"build/final/{out.name} ({cfg.final.compression}) with its manifest and SBOM"
               + (", signed" if cfg.signing_key is not None else ""),
        "actions": [(action("flatten_image"), [top.output, out], {
            "kernel": kernel, "initrd": initrd, "cfg": cfg.final, "logfile": log(project, task, image.variant),
            "chain": chain, "root": cfg.root, "reports": _report_folders(project, image),
            "variant": image.variant, "signing_key": cfg.signing_key, "digests": digests(project),
        })],
        "file_dep": deps,
        "targets": rels(project, final_outputs(project, image)),
        # Compression settings decide the file but not the stages: only this task re-runs.
        # So does signing with another key (or none).
        "uptodate": [settings_changed(asdict(cfg.final), "final"),
                     settings_changed({"signer": cfg.signer}, "signing")],
        "clean": True,
        "meta": {"vaultdoit": {"kind": "final", "image": rel(project, out), "top": top.id, "variant": image.variant,
                               "log": rel(project, log(project, task, image.variant))}},
    }


def verify_logs(project: Project, image: Image) -> Path:
    """Where the boot test of ``image`` keeps its serial log and files."""
    return project.config.paths.verify_logs(image.name, image.variant)


def verify_task(project: Project, image: Image | None = None) -> dict[str, Any]:
    """Boot the final image (snapshot=on) and check it over SSH; fails the build on any failure."""
    cfg = project.config
    image = image or project.images[0]
    report = verify_report(project, image)
    junit = report.with_name(report.stem + ".junit.xml")
    task = image.task("verify")
    # The boot test logs in with the access key, which the keys task makes.
    key = [cfg.login_key] if cfg.login_key in (cfg.access_key, cfg.build_key) else []
    return {
        "basename": task,
        "doc": f"boot {final_path(project, image).name} on a throwaway snapshot and check it over SSH",
        "actions": [(action("verify_image"), [Later("boot_spec", project, image), report, junit], {"label": task})],
        "file_dep": rels(project, [*final_outputs(project, image), *key]),
        "targets": rels(project, [report, junit]),
        "uptodate": [settings_changed({"units": list(cfg.verify.units), "checks": list(cfg.verify.checks),
                                       "user": cfg.verify.user}, "verify")],
        "clean": True,
        "meta": {"vaultdoit": {"kind": "verify", "report": rel(project, report), "junit": rel(project, junit),
                               "log": rel(project, verify_logs(project, image) / "serial.log"), "variant": image.variant,
                               "final": image.task("final_image")}},
    }


def verify_report(project: Project, image: Image | None = None) -> Path:
    """The boot test's JSON report of ``image`` (default: the first; its JUnit XML goes beside it)."""
    image = image or project.images[0]
    return project.config.paths.verify_report(image.name, image.variant)


def selected(project: Project, variants: Sequence[str] | None) -> list[Image]:
    """The images the ``final_image`` and ``verify`` groups cover: those of ``variants`` (None: the
    profile's ``variant`` setting) and every image that belongs to no variant."""
    from vaultdoit.variants import choose

    names = choose(project.variants, project.config.variant) if variants is None else tuple(variants)
    return [i for i in project.images if i.variant is None or i.variant in names]


def group_task(project: Project, family: str, images: Sequence[Image], doc: str) -> dict[str, Any]:
    return {
        "basename": family,
        "doc": f"{doc}: {', '.join(str(i.name) for i in images)}",
        "actions": [],
        "task_dep": [i.task(family) for i in images],
        # Nothing of its own to do: reported up to date, its images run (or not) by themselves.
        "uptodate": [True],
    }


def gen_tasks(project: Project, variants: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    for image in project.images:
        yield final_image_task(project, image)
    for image in project.images:
        yield verify_task(project, image)
    if project.images[0].name is not None:
        chosen = selected(project, variants)
        yield group_task(project, "final_image", chosen, "every final image")
        yield group_task(project, "verify", chosen, "boot-test every final image")
