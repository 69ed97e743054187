"""Where an image comes from: the project's git commit and state, and the host that built it.

Recorded in the manifest and the SBOM. A dirty tree is allowed and said; a
project outside git (or a git that refuses the checkout) is said too, with
why. Nothing here reads the environment's values or a file's contents: only
names, versions and digests leave this module.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from vaultdoit import proc

# Debian packages of the build host whose versions decide or describe the image.
HOST_PACKAGES = ("mmdebstrap", "e2fsprogs", "fakeroot", "uidmap", "qemu-utils", "qemu-system-x86", "packer",
                 "openssh-client", "apt-cacher-ng", "git")
MAX_CHANGES = 50  # changed paths listed in a dirty tree's record (the count is always complete)


def git_state(root: Path) -> dict[str, Any]:
    """``{"commit", "dirty", "changes", "changed"}`` of the checkout holding ``root``, or
    ``{"commit": None, "dirty": None, "reason"}`` when there is none to read."""
    git = proc.which("git")
    if git is None:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    code, out = proc.check_output([git, "-C", str(root), "rev-parse", "--verify", "HEAD"], timeout=30)
    if code != 0:
        return {"commit": None, "dirty": None, "reason": _why(out)}
    commit = out.strip().splitlines()[-1]
    # Only the project's folder counts, without what the build writes (build/, cache/).
    code, out = proc.check_output([git, "-C", str(root), "status", "--porcelain=v1", "--untracked-files=normal",
                                   "--", ".", ":(exclude)build", ":(exclude)cache"], timeout=60)
    if code != 0:
        return {"commit": commit, "dirty": None, "reason": _why(out)}
    changed = sorted(line[3:] for line in out.splitlines() if len(line) > 3)
    return {"commit": commit, "dirty": bool(changed), "changes": len(changed), "changed": changed[:MAX_CHANGES]}


def _why(output: str) -> str:
    """git's error in a few words."""
    text = " ".join(output.split())
    if "not a git repository" in text:
        return "not a git checkout"
    if "dubious ownership" in text:
        return "git refuses the checkout: it belongs to another user (dubious ownership)"
    if "ambiguous argument 'HEAD'" in text or "Needed a single revision" in text:
        return "the repository has no commit yet"
    return text.removeprefix("fatal: ")[:200] or "git failed"


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The fields of an os-release file ({} if it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return fields
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def host_packages(names: tuple[str, ...] = HOST_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` on this host (dpkg), absent ones left out."""
    if proc.which("dpkg-query") is None:
        return {}
    code, out = proc.check_output(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n",
                                   *names], timeout=30)
    found = {}
    for line in out.splitlines():  # exit 1 when some are unknown: the others are still listed
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii") and parts[1]:
            found[parts[0]] = parts[1]
    return dict(sorted(found.items()))


def build_host() -> dict[str, Any]:
    """The host that made the image: system, kernel, and its build tools' package versions."""
    release = os_release()
    return {
        "os": release.get("PRETTY_NAME") or platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "packages": host_packages(),
    }


def record(root: Path) -> dict[str, Any]:
    """The provenance block of the manifest (and the SBOM's properties)."""
    return {"git": git_state(root), "build_host": build_host()}
