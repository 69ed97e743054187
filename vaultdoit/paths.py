"""Every path of a build, in one place: stage bookkeeping, final images, logs, reports, state.

One profile of a project writes:

```
build/<profile>/.vaultdoit/          state: doit's DB, digests, markers, var files, ansible.cfg, tools
build/<profile>/reports/             what shared stages report (package lists)
build/<profile>/reports/<variant>/   what a variant's own stages report, and its boot-test reports
build/<profile>/dev/<stage>/         development images of tag-scoped runs
build/<profile>/failed/<stage>/      a failed build's disk, with keep_failed
build/logs/<profile>/                logs of the tasks shared by every image
build/logs/<profile>/<variant>/      logs of a variant's own tasks (stage, final_image, verify)
build/final/<image_name>.qcow2       the final image (several images: <image_name>-<image>.qcow2)
cache/facts/<stage>                  Ansible's fact cache of each stage build
```

Without profiles ``build/<profile>`` is ``build`` and ``build/logs/<profile>``
is ``build/logs``. The stages' own images go where the templates say
(``output_directory``). Nothing here touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def safe(name: str) -> str:
    """A task or stage id as a file name: ``stage:final:demo`` -> ``stage-final-demo``."""
    return name.replace(":", "-")


def building_marker(state_dir: Path, stage_id: str) -> Path:
    """The file that exists while a build of the stage is in progress."""
    return state_dir / f"{safe(stage_id)}.building"


@dataclass(frozen=True)
class BuildPaths:
    """The paths of one profile's build (all absolute, under ``root``)."""

    root: Path
    profile: str | None
    image_name: str

    # --- folders --------------------------------------------------------------------------------------

    @property
    def build_dir(self) -> Path:
        return self.root / "build" / self.profile if self.profile else self.root / "build"

    @property
    def state_dir(self) -> Path:
        """vaultdoit's own bookkeeping (doit's dependency DB, digests, markers)."""
        return self.build_dir / ".vaultdoit"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def final_dir(self) -> Path:
        return self.root / "build" / "final"

    @property
    def logs_root(self) -> Path:
        return self.root / "build" / "logs" / self.profile if self.profile else self.root / "build" / "logs"

    def logs(self, variant: str | None = None) -> Path:
        """The folder of the logs of ``variant``'s own builds (None: shared builds)."""
        return self.logs_root / variant if variant else self.logs_root

    def reports(self, variant: str | None = None) -> Path:
        """Where the builds of ``variant`` (None: shared stages) leave what they report."""
        base = self.build_dir / "reports"
        return base / variant if variant else base

    # --- per task and per stage -----------------------------------------------------------------------

    def task_log(self, task: str, variant: str | None = None) -> Path:
        """``stage:drivers`` -> logs/stage-drivers.log; ``stage:final:demo`` -> logs/demo/stage-final.log."""
        if variant and task.endswith(":" + variant):
            task = task[: -len(variant) - 1]
        return self.logs(variant) / (safe(task) + ".log")

    @property
    def digests(self) -> Path:
        """The checker's digest sidecar (see vaultdoit.checker)."""
        return self.state_dir / "digests.json"

    @property
    def tools_dir(self) -> Path:
        """Helper programs put first on Packer's PATH (the qemu-img wrapper)."""
        return self.state_dir / "tools"

    def building_marker(self, stage_id: str) -> Path:
        return building_marker(self.state_dir, stage_id)

    def var_file(self, stage_id: str) -> Path:
        """The private var file of one Packer run (removed when it ends)."""
        return self.state_dir / "vars" / f"{safe(stage_id)}.pkrvars.hcl"

    def ansible_cfg(self, stage_id: str) -> Path:
        return self.state_dir / "ansible" / f"{safe(stage_id)}.cfg"

    def facts(self, stage_id: str) -> Path:
        """Ansible's fact cache of the stage: one per build, so builds side by side never share it."""
        return self.cache_dir / "facts" / safe(stage_id)

    @property
    def bootstrap_workdir(self) -> Path:
        return self.build_dir / "tmp"

    @property
    def failed_dir(self) -> Path:
        """Where ``keep_failed`` puts a failed stage's disk (``failed/<stage>/``): never a stage's folder."""
        return self.build_dir / "failed"

    def failed_disk(self, stage_id: str, image_name: str) -> Path:
        return self.failed_dir / safe(stage_id) / image_name

    def dev_dir(self, stage_id: str) -> Path:
        """The development image of a tag-scoped run (``dev:<stage>``)."""
        return self.build_dir / "dev" / safe(stage_id)

    # --- images ---------------------------------------------------------------------------------------

    def final_image(self, image: str | None = None) -> Path:
        """``build/final/<image_name>.qcow2``, or ``<image_name>-<image>.qcow2`` when there are several."""
        suffix = f"-{safe(image)}" if image else ""
        return self.final_dir / f"{self.image_name}{suffix}.qcow2"

    def verify_logs(self, image: str | None, variant: str | None) -> Path:
        """The boot test's serial, QEMU and SSH logs of one image."""
        leaf = image.split(":")[0] if image and image != variant else None
        return self.logs(variant) / (f"verify-{leaf}" if leaf else "verify")

    def verify_report(self, image: str | None, variant: str | None) -> Path:
        """The boot test's report, beside the stage reports of the image's variant."""
        return self.reports(variant) / f"verify-{self.final_image(image).stem}.json"
