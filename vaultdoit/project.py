"""A planned project: its settings, stages and images (what ``plan.load_project`` makes).

Plain data and lookups only: a run whose plan is kept (see plancache) needs this
module, never the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaultdoit.config import ProjectConfig, VariantConfig
from vaultdoit.model import AptRoute, Image, PackerConfig, Stage

if TYPE_CHECKING:
    from vaultdoit import runvars


@dataclass(frozen=True)
class Project:
    """A planned project: configuration, the Packer folder, the stages and the images made of them."""

    config: ProjectConfig
    packer: PackerConfig | None  # the first variant's, with several
    stages: tuple[Stage, ...]  # parents before children; a stage built per variant appears once per variant
    images: tuple[Image, ...]
    warnings: tuple[str, ...] = ()
    apt: AptRoute = AptRoute()  # the APT proxy the builds use
    variants: tuple[str, ...] = ()  # the profile's variants, as declared
    run_vars: runvars.RunVars = ()  # the run's var.NAME=value (see runvars.py)

    @property
    def top(self) -> Stage:
        """The stage flattened into the (first) final image."""
        return self.stage(self.images[0].top)

    def stage(self, ident: str) -> Stage:
        """The stage with id ``ident`` (``name`` or ``name:variant``)."""
        for stage in self.stages:
            if stage.id == ident:
                return stage
        raise KeyError(ident)

    def parent(self, stage: Stage) -> Stage | None:
        return self.stage(stage.parent) if stage.parent else None

    def chain(self, stage: Stage | None = None) -> list[Stage]:
        """``stage`` (default: the top) and its ancestors, base first."""
        node: Stage | None = stage or self.top
        result: list[Stage] = []
        while node is not None:
            result.append(node)
            node = self.parent(node)
        return list(reversed(result))


def pubkey(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def wheel_manifest(cfg: ProjectConfig) -> Path:
    """The wheelhouse's manifest: the file stages that install wheels depend on."""
    return cfg.cache_dir / "wheels" / "manifest.json"


def planned_with(project: Project, stage: Stage) -> VariantConfig | None:
    """The variant whose values ``stage`` was planned with (a shared stage: the first)."""
    found = project.config.variants
    if not found:
        return None
    return next(v for v in found if v.name == stage.variant) if stage.variant else found[0]
