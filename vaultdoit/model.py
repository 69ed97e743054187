"""Frozen data model shared by the readers, the planner and the task builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


MISSING_YET = " does not exist yet"  # Unknown.reason ending of a file function's file not there (yet)


@dataclass(frozen=True)
class Unknown:
    """A template value that cannot be computed before the build (an unset variable, a
    data source, a function of the build's own state).

    It takes part in stage keys by its raw expression ``text``; ``prefix`` is the literal
    text before the first unknown part (a path built from an unknown value widens to the
    folder ``prefix`` names); ``where`` is ``file:line`` for warnings.
    """

    text: str
    where: str
    reason: str
    prefix: str = ""


@dataclass(frozen=True)
class Provisioner:
    """An ``ansible`` (or ``ansible-local``) provisioner of a Packer build, resolved."""

    type: str
    playbook_file: Path | None  # absolute
    extra_arguments: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # values or Unknown
    where: str = ""  # file:line of the provisioner block


@dataclass(frozen=True)
class PackerSource:
    """One ``source "qemu" "<name>"`` with its per-build overrides applied and values resolved."""

    name: str
    file: Path  # the template that defines the source block
    attrs: dict[str, Any] = field(hash=False, compare=False)  # resolved attributes
    provisioners: tuple[Provisioner, ...] = ()
    build_name: str | None = None  # ``build { name = ... }`` when set
    # Attributes written as a lone ``var.X`` (attribute -> X): vaultdoit can point them elsewhere.
    attr_vars: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # Files read while evaluating this source and its provisioners (file(), templatefile(), ...).
    reads: frozenset[Path] = frozenset()
    where: str = ""  # file:line of the source block

    @property
    def only(self) -> str:
        """The ``packer build -only=`` value that selects this source."""
        return f"{self.build_name}.qemu.{self.name}" if self.build_name else f"qemu.{self.name}"


@dataclass(frozen=True)
class PackerConfig:
    """A folder of Packer templates as Packer itself loads it (``packer build DIR``)."""

    directory: Path
    files: tuple[Path, ...]  # every *.pkr.hcl Packer loads from the folder
    var_files: tuple[Path, ...]  # *.auto.pkrvars.hcl plus those passed explicitly
    variables: dict[str, Any] = field(hash=False, compare=False)
    sources: tuple[PackerSource, ...] = ()
    sensitive: frozenset[str] = frozenset()  # variables declared with sensitive = true
    # Variables whose value did not come from the template's default (var files, vault.toml,
    # PKR_VAR_*, the command line): hand exactly these to Packer so it sees the same values.
    assigned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlaybookClosure:
    """Every file an Ansible playbook depends on."""

    playbook: Path
    files: frozenset[Path]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """A node of the image chain: one qcow2 image, built by Packer or by a bootstrap tool."""

    name: str
    kind: str  # "packer" or "mmdebstrap"
    output: Path  # the image file (absolute)
    parent: str | None  # the parent stage's id
    inputs: tuple[Path, ...]  # files whose content decides the image (sorted, absolute)
    settings: dict[str, Any] = field(hash=False, compare=False)  # resolved values that decide the image
    source: PackerSource | None = None
    packer: PackerConfig | None = None
    extra_outputs: tuple[Path, ...] = ()  # e.g. kernel and initrd of a bootstrapped base
    iso: tuple[str, str, Path] | None = None  # (iso_url, iso_checksum, its place in the ISO store)
    doc: str = ""
    # A downloaded disk image the stage's overlay is backed by (a cloud image as the chain's root).
    root_image: Path | None = None
    # Inputs that are missing: errors of building this stage (listing the project still works).
    problems: tuple[str, ...] = ()
    # The variant this stage is built for; None: one build shared by every variant (or no variants).
    variant: str | None = None

    @property
    def id(self) -> str:
        """``name``, or ``name:variant`` for a stage built once per variant (``stage:<id>`` is its task)."""
        return f"{self.name}:{self.variant}" if self.variant else self.name


@dataclass(frozen=True)
class Image:
    """One final image: a leaf of the stage graph (or ``top``), for one variant or for all."""

    name: str | None  # None: the project's only image; else "<variant>", "<leaf>" or "<leaf>:<variant>"
    top: str  # the id of the stage flattened into it
    variant: str | None = None

    def task(self, family: str) -> str:
        """``final_image`` / ``final_image:<name>`` (and the same for ``verify``)."""
        return f"{family}:{self.name}" if self.name else family


GUEST_HOST = "10.0.2.2"  # the host's loopback as seen from QEMU user networking
# The build's own apt-cacher-ng: not the distribution's 3142 (its service may hold that port),
# and below 32768 (apt-cacher-ng 3.7 cannot bind ports from 32768 up).
DEFAULT_APT_PORT = 31420


@dataclass(frozen=True)
class AptRoute:
    """The APT proxy a build uses, resolved once when the project is planned."""

    host_url: str | None = None  # for tools on the host (mmdebstrap)
    guest_url: str | None = None  # for build VMs (QEMU user networking)
    managed_root: Path | None = None  # cache/apt when the proxy is the build's own apt-cacher-ng
    managed_port: int = 0
