"""``vaultdoit doctor``: can this host build the project? One line per check.

Tools and their versions, the accelerator with the probe's reason, free space
and write permission in the project, build/ and cache/, and the APT proxy's
port. A check fails when a build cannot work (a required tool missing, no
write permission, a full disk, the proxy's port held by another program);
it warns when a build works but worse (TCG, little space, no apt-cacher-ng).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from vaultdoit import accel, packer, ports, proc
from vaultdoit.errors import VaultError

OK, WARN, FAIL = "ok", "warn", "fail"
LOW_SPACE = 10 * 2**30  # a stage chain, its final image and the caches need several GiB
NO_SPACE = 1 * 2**30
VERSION = re.compile(r"\d+(?:\.\d+)+(?:p\d+)?")


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str  # ok, warn or fail
    detail: str
    hint: str | None = None

    def line(self, width: int = 20) -> str:
        text = f"{self.status.upper() if self.status != OK else 'ok':<4}  {self.name:<{width}}  {self.detail}"
        return text + (f" (fix: {self.hint})" if self.hint else "")


@dataclass(frozen=True)
class Tool:
    """A program a build runs; ``version`` is its arguments that print a version (None: ask dpkg)."""

    name: str
    version: tuple[str, ...] | None
    needed_for: str  # "build" (every build), "bootstrap" (a bootstrapped base), "cache" (optional)


TOOLS = (
    Tool("packer", ("version",), "build"),
    Tool("qemu-system-x86_64", ("--version",), "build"),
    Tool("qemu-img", ("--version",), "build"),
    Tool("mmdebstrap", ("--version",), "bootstrap"),
    Tool("mke2fs", ("-V",), "bootstrap"),
    Tool("fakeroot", ("-v",), "bootstrap"),
    # apt-cacher-ng has no version option: an unknown one starts the daemon.
    Tool("apt-cacher-ng", None, "cache"),
    Tool("ssh", ("-V",), "build"),
    Tool("ssh-keygen", None, "build"),
    Tool("ansible-playbook", ("--version",), "build"),
)


@dataclass(frozen=True)
class Context:
    """What the checks need to know about the project (all optional outside one)."""

    root: Path | None = None
    build_dir: Path | None = None
    cache_dir: Path | None = None
    accelerator: str = "auto"
    bootstraps: bool = True  # whether mmdebstrap and mke2fs are needed
    apt_proxy: str = "auto"
    apt_proxy_port: int = 3142
    probe: accel.ProbeSpec = accel.ProbeSpec()
    problem: str | None = None  # why the project could not be read


def context(root: Path | None, profile: str | None = None) -> Context:
    """What the checks need from the project at ``root`` (None: outside any project)."""
    from vaultdoit import config_file
    from vaultdoit.plan import load_project
    from vaultdoit.tasks.specs import probe_spec

    if root is None:
        return Context()
    build, cache = root / "build", root / "cache"
    try:
        cfg = config_file.load(root, profile)
    except VaultError as exc:
        return Context(root=root, build_dir=build, cache_dir=cache, problem=str(exc))
    try:
        probe, problem = probe_spec(load_project(root, profile)), None
    except VaultError as exc:
        probe = accel.ProbeSpec(tuple(b.kernel for b in cfg.bootstraps), cfg.cache_dir / "probe")
        problem = str(exc)
    return Context(root=root, build_dir=build, cache_dir=cfg.cache_dir, accelerator=cfg.accelerator,
                   bootstraps=bool(cfg.bootstraps), apt_proxy=cfg.apt_proxy, apt_proxy_port=cfg.apt_proxy_port,
                   probe=probe, problem=problem)


def _version(tool: Tool, path: str) -> str:
    if tool.name == "packer":
        return ".".join(map(str, packer.packer_version()))  # without Packer's online update check
    if tool.version is None:
        package = proc.PACKAGES.get(tool.name, tool.name).split()[0]
        code, out = proc.check_output(["dpkg-query", "-W", "-f=${Version}", package], timeout=20)
    else:
        code, out = proc.check_output([path, *tool.version], timeout=20)
    match = VERSION.search(out)
    return match.group(0) if match else "version unknown"


def check_tool(tool: Tool, ctx: Context) -> Check:
    """Installed (with version and path) or missing (with the package to install)."""
    required = tool.needed_for == "build" or (tool.needed_for == "bootstrap" and ctx.bootstraps)
    try:
        path = proc.find_tool(tool.name)
    except VaultError:
        package = proc.PACKAGES.get(tool.name, tool.name)
        if required:
            return Check(tool.name, FAIL, "not installed", f"install {package}")
        why = {"cache": "builds fetch packages without a local cache",
               "bootstrap": "needed only for a bootstrapped base"}[tool.needed_for]
        return Check(tool.name, WARN if tool.needed_for == "cache" else OK, f"not installed ({why})",
                     f"install {package}" if tool.needed_for == "cache" else None)
    try:
        version = _version(tool, path)
    except (VaultError, OSError, subprocess.TimeoutExpired) as exc:
        return Check(tool.name, FAIL if required else WARN, f"{path} does not run: {exc}",
                     f"reinstall {proc.PACKAGES.get(tool.name, tool.name)}")
    return Check(tool.name, OK, f"{version} ({path})")


USERNS_RESTRICTED = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")


def check_user_namespaces(ctx: Context) -> Check:
    """Can this user bootstrap a base without root (mmdebstrap's unshare mode)?"""
    from vaultdoit import bootstrap

    name = "user namespaces"
    if not ctx.bootstraps:
        return Check(name, OK, "not needed (no bootstrapped stage)")
    if os.geteuid() == 0:
        return Check(name, OK, "not needed: root bootstraps with a mount namespace only")
    try:
        bootstrap.check_subordinate_ids()
    except VaultError as exc:
        return Check(name, FAIL, exc.message if not exc.file else f"{exc.file}: {exc.message}", exc.hint)
    try:
        restricted = USERNS_RESTRICTED.read_text().strip() == "1"
    except OSError:
        restricted = False
    if restricted:
        return Check(name, FAIL, "AppArmor forbids user namespaces to programs without a profile "
                                 "(kernel.apparmor_restrict_unprivileged_userns = 1)",
                     "allow them for mmdebstrap (an AppArmor profile with userns), or "
                     "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0")
    return Check(name, OK, "subordinate ids set: mmdebstrap bootstraps without root")


def check_accelerator(ctx: Context) -> Check:
    """The probe's verdict (cached per host boot) against the ``accelerator`` setting."""
    try:
        found = accel.verdict("auto", ctx.probe, announce=False)
    except VaultError as exc:
        return Check("accelerator", FAIL, str(exc))
    if ctx.accelerator == "kvm" and found.accelerator != "kvm":
        return Check("accelerator", FAIL, f"kvm is set in vault.toml, but {found.reason}",
                     'set accelerator = "auto" or "tcg"')
    if ctx.accelerator == "tcg":
        return Check("accelerator", OK, f"tcg (set in vault.toml; the probe says {found.line()})")
    if found.accelerator == "tcg":
        return Check("accelerator", WARN, f"tcg, software emulation, several times slower ({found.reason})")
    return Check("accelerator", OK, f"kvm ({found.reason})")


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing parent (where it would be created)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def check_space(name: str, folder: Path) -> Check:
    """Free space where ``folder`` is (or will be)."""
    free = shutil.disk_usage(_existing(folder)).free
    detail = f"{_gib(free)} free ({folder})"
    if free < NO_SPACE:
        return Check(name, FAIL, detail, "free some space or move the project to a larger disk")
    if free < LOW_SPACE:
        return Check(name, WARN, f"{detail}: less than {_gib(LOW_SPACE)}", "free some space")
    return Check(name, OK, detail)


def check_writable(name: str, folder: Path) -> Check:
    """Whether this user can create files in ``folder`` (or create it): tried, not guessed."""
    target = _existing(folder)
    try:
        # A real file: access(2) says yes to root on a read-only mount.
        fd, probe = tempfile.mkstemp(prefix=".vaultdoit-doctor-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return Check(name, FAIL, f"cannot write in {target}: {exc.strerror}",
                     f"make {target} writable for this user (or run as the owner)")
    where = str(folder) if target == folder else f"{folder} (to be created in {target})"
    return Check(name, OK, f"writable: {where}")


def check_apt_port(ctx: Context) -> Check:
    """The managed apt-cacher-ng's port: free, ours, or held by another program (who, and what to do)."""
    name = "apt proxy port"
    if ctx.apt_proxy != "auto":
        what = "off" if ctx.apt_proxy == "off" else f"the external proxy {ctx.apt_proxy}"
        return Check(name, OK, f"not used (apt_proxy is {what})")
    if proc.which("apt-cacher-ng") is None:
        return Check(name, OK, "not used (apt-cacher-ng is not installed)")
    port = ctx.apt_proxy_port
    held = ports.holder(port)
    if held is None:
        return Check(name, OK, f"127.0.0.1:{port} is free")
    ours = ctx.cache_dir / "apt" / "conf" if ctx.cache_dir else None
    if held.name == "apt-cacher-ng" and ours is not None and f" -c {ours}" in f" {held.command}":
        return Check(name, OK, f"127.0.0.1:{port} is this project's apt-cacher-ng (pid {held.pid})")
    # apt-cacher-ng binds only ports below 32768.
    spare = ports.free_port_from(port + 1) or ports.free_port_from(3143)
    pick = f"set apt_proxy_port = {spare} in vault.toml" if spare else "set apt_proxy_port in vault.toml"
    if held.name == "apt-cacher-ng":
        distro = " -c " not in f" {held.command} " or "/etc/apt-cacher-ng" in held.command
        whose = "probably the distribution's service" if distro else "another project's or user's"
        return Check(name, FAIL, f"127.0.0.1:{port} is held by another apt-cacher-ng, {whose}: "
                                 f"{held.describe()}",
                     f'{pick}; or use it with apt_proxy = "http://127.0.0.1:{port}"'
                     + ("; or stop it: systemctl disable --now apt-cacher-ng" if distro else ""))
    return Check(name, FAIL, f"127.0.0.1:{port} is held by {held.describe()}", pick)


def run(ctx: Context) -> list[Check]:
    """Every check, in report order."""
    checks: list[Check] = []
    if ctx.problem:
        checks.append(Check("project", FAIL, ctx.problem))
    elif ctx.root is not None:
        checks.append(Check("project", OK, str(ctx.root)))
    else:
        checks.append(Check("project", WARN, "not inside a vaultdoit project: folder checks skipped",
                            "run from the project folder or pass -C DIR"))
    # The version commands are slow only one by one (ansible-playbook: seconds): ask all at once.
    with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
        checks += list(pool.map(lambda tool: check_tool(tool, ctx), TOOLS))
    checks.append(check_accelerator(ctx))
    checks.append(check_user_namespaces(ctx))
    if ctx.root is not None and ctx.build_dir is not None and ctx.cache_dir is not None:
        checks.append(check_space("space in build/", ctx.build_dir))
        checks.append(check_space("space in cache/", ctx.cache_dir))
        checks.append(check_writable("write project", ctx.root))
        checks.append(check_writable("write build/", ctx.build_dir))
        checks.append(check_writable("write cache/", ctx.cache_dir))
    checks.append(check_apt_port(ctx))
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    failed = sum(c.status == FAIL for c in checks)
    verdict = "a build can run here" if not failed else f"{failed} problem(s) stop a build here"
    return "\n".join([*(c.line(width) for c in checks), verdict])


def to_json(checks: list[Check]) -> str:
    return json.dumps({"ok": not failed(checks), "checks": [asdict(c) for c in checks]}, indent=2)


def failed(checks: list[Check]) -> bool:
    """True when a build cannot work on this host."""
    return any(c.status == FAIL for c in checks)
