"""What a build action gets: plain data made from the plan when the action runs.

Kept apart from the plan's model (vaultdoit.model): a run that builds nothing
never makes these, nor imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdoit.model import AptRoute, Stage


@dataclass(frozen=True)
class RemoteCache:
    """The shared stage cache of a build (an OCI registry repository), resolved when planned."""

    repository: str  # "<registry>[:port]/<repository>"
    push: bool = True  # push the stages built here
    chunk_size: int = 256 * 2**20  # largest layer


@dataclass(frozen=True)
class ProbeSpec:
    """Where the accelerator probe finds a kernel and keeps its verdict (plain data, for task dicts)."""

    kernels: tuple[Path, ...] = ()  # candidates, first existing one is booted
    cache_dir: Path | None = None  # cache/probe of the project; None: keep nothing on disk


@dataclass(frozen=True)
class StageBuild:
    """Everything one stage build needs, planned before it runs (the action's only argument)."""

    stage: Stage
    ancestors: tuple[Stage, ...]  # base first; the last one is the parent
    root: Path
    state_dir: Path
    logfile: Path
    digests: Path  # the checker's digest sidecar
    apt: AptRoute = AptRoute()
    # Packer stages only:
    # The final value of every variable the template's defaults do not decide (see PackerConfig.assigned).
    variables: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    accelerator: str = "auto"
    ansible_cfg: Path | None = None
    stall_timeout: float = 0.0  # 0: the stage decides
    keep_failed: Path | None = None  # where a failed build's disk is kept (build/<profile>/failed); None: removed
    probe: ProbeSpec | None = None  # the kernels the accelerator probe may boot
    # Bootstrapped stages only: the bootstrap's own spec (vaultdoit.bootstrap.BootstrapSpec).
    bootstrap: Any = None
    workdir: Path | None = None
    # Where this build keeps its files (vaultdoit.paths.BuildPaths) and the task it runs for.
    paths: Any = None
    task: str = ""
    folders: tuple[Path, ...] = ()  # made before the build: its log and report folders
    # The build VM: its size (vaultdoit.resources.VMSize, what the guard counts), the template
    # variables that receive it, and the port-window variables the template declares.
    vm: Any = None
    vm_vars: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    port_vars: tuple[str, ...] = ()
    remote: RemoteCache | None = None  # the shared stage cache, if any (vaultdoit/remote.py)
    reports: Path | None = None  # where stages leave their reports (build/<profile>/reports)

    @property
    def parent(self) -> Stage | None:
        return self.ancestors[-1] if self.ancestors else None

    @property
    def backing(self) -> Path | None:
        """What the stage's image is an overlay on: the parent's image, a root image, or nothing."""
        return self.parent.output if self.parent is not None else self.stage.root_image
