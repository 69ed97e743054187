"""Variants of a profile: each planned with its own values, stages shared where all plan the same build.

A variant is a set of Packer variable values (vault.toml
``[variants.<name>]``). The planner reads the templates once per variant;
here those plans are merged: a stage whose key material (resolved settings
without the place it writes to, inputs, parent) is the same in every variant
is one stage, built once (``stage:<name>``); any other stage is one per
variant (``stage:<name>:<variant>``), and each variant then needs its own
output folder. Pure: no files are read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from vaultdoit.errors import ConfigError, GraphError
from vaultdoit.keys import canonical
from vaultdoit.model import Image, Stage
from vaultdoit.paths import BuildPaths

VARIANT_VAR = "variant"  # set to the variant's name where the template declares it
# Where a build writes its logs and reports: set by vaultdoit to the build's own folders where
# the template declares them, and left out of every key (placeholders, see keys.normalize).
LOCATION_VARS = {"log_dir": "<logs>", "report_dir": "<reports>"}
# Attributes that say where a stage writes, not what it holds: left out when variants are compared.
WHERE_ATTRS = ("output_directory", "vm_name")


def choose(known: Sequence[str], text: str, *, file: str | Path | None = None, source: str = "") -> tuple[str, ...]:
    """The variants ``text`` names ("all", a name, or names separated by commas), checked."""
    if not known:
        if text.strip() in ("", "all"):
            return ()
        raise ConfigError(f"variant {text!r}{source}: this profile declares no variants", file=file,
                          hint="drop variant=, or declare [profiles.<profile>.variants.<name>] tables")
    if text.strip() == "all":
        return tuple(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1) if unknown else []
        guess = f'did you mean "{close[0]}"? ' if close else ""
        raise ConfigError(f"unknown variant {unknown[0] if unknown else text!r}{source}", file=file,
                          hint=f"{guess}known variants: {', '.join(known)} (or all)")
    return tuple(dict.fromkeys(names))


def locations(paths: BuildPaths, variant: str | None) -> dict[str, str]:
    """The location variables of a build for ``variant`` (None: a shared build)."""
    return {"log_dir": str(paths.logs(variant)), "report_dir": str(paths.reports(variant))}


def places(paths: BuildPaths, variant: str | None) -> dict[str, str]:
    """The folders of ``locations`` -> the placeholder that stands for each in keys."""
    return {value: LOCATION_VARS[name] for name, value in locations(paths, variant).items()}


def material(stage: Stage, parent: str | None) -> str:
    """What decides a stage's image, the place it writes to left aside (``parent``: its parent's id)."""
    settings = dict(stage.settings)
    if isinstance(settings.get("source"), dict):
        settings["source"] = {k: v for k, v in settings["source"].items() if k not in WHERE_ATTRS}
    return canonical({"kind": stage.kind, "settings": settings, "inputs": [str(p) for p in stage.inputs],
                      "parent": parent, "problems": list(stage.problems), "iso": stage.iso,
                      "root_image": stage.root_image})


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def combine(names: Sequence[str], passes: Mapping[str, Sequence[Stage]], shared: Sequence[Stage],
            root: Path) -> tuple[list[Stage], list[str]]:
    """Merge the per-variant plans (``passes``: variant -> its stages, parents first, parent =
    a name) into one list of stages. ``shared`` is the plan with shared build folders (logs,
    reports), of which the stages every variant plans alike are taken."""
    by_variant = {v: {s.name: s for s in passes[v]} for v in names}
    shared_by_name = {s.name: s for s in shared}
    order: list[str] = []
    for v in names:
        order += [s.name for s in passes[v] if s.name not in order]
    per_variant: set[str] = set()  # names built once per variant
    result: list[Stage] = []
    warnings: list[str] = []

    def parent_id(stage: Stage, variant: str) -> str | None:
        if stage.parent is None:
            return None
        return f"{stage.parent}:{variant}" if stage.parent in per_variant else stage.parent

    for name in order:
        found = {v: by_variant[v][name] for v in names if name in by_variant[v]}
        kinds = {material(s, parent_id(s, v)) for v, s in found.items()}
        outputs = {s.output for s in found.values()}
        alike = len(found) == len(names) and len(kinds) == 1
        if alike and len(outputs) == 1:
            base = shared_by_name.get(name)
            if base is None or base.output != next(iter(outputs)):  # a template that moves it by log_dir
                base = next(iter(found.values()))
            result.append(base)
            continue
        per_variant.add(name)
        first = next(iter(found.values()))
        if alike:
            folders = ", ".join(sorted(_rel(p.parent, root) for p in outputs))
            warnings.append(f"{first.source.where if first.source else name}: stage \"{name}\" is the same for "
                            f"every variant but each writes its own folder ({folders}): it is built once per "
                            "variant; keep ${var.variant} out of its output_directory to build it once")
        seen: dict[Path, str] = {}
        for v, stage in found.items():
            folder = stage.output.parent
            if folder in seen:
                raise GraphError(
                    f'stage "{name}" differs between variants, but {seen[folder]} and {v} both write '
                    f"{_rel(folder, root)}",
                    file=stage.source.where if stage.source else None,
                    hint=f'give each variant its own folder, e.g. output_directory = "${{var.build_dir}}/'
                         f'${{var.variant}}/{name}" (vaultdoit sets var.variant to the variant\'s name)')
            seen[folder] = v
            result.append(replace(stage, variant=v, parent=parent_id(stage, v)))
    return result, warnings


def images(stages: Sequence[Stage], top: str | None) -> tuple[Image, ...]:
    """The final images: every leaf of the graph (or every instance of ``top``), one per variant
    where the stage is built per variant. One image has no name (plain ``final_image``)."""
    children = {s.parent for s in stages if s.parent}
    tops = [s for s in stages if s.name == top] if top else [s for s in stages if s.id not in children]
    several_leaves = len({s.name for s in tops}) > 1
    found = []
    for stage in tops:
        parts = ([stage.name] if several_leaves else []) + ([stage.variant] if stage.variant else [])
        found.append(Image(name=":".join(parts) or None, top=stage.id, variant=stage.variant))
    if len(found) == 1:
        return (replace(found[0], name=None),)
    return tuple(found)
