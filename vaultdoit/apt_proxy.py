"""A private apt-cacher-ng for the build: own config and cache under cache/apt/, loopback only.

It runs as a background service that later builds reuse (warm cache);
`vaultdoit cache stop` stops it. The system's apt-cacher-ng configuration is
never touched. Guests on QEMU user networking reach it as 10.0.2.2.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vaultdoit import proc
from vaultdoit.errors import VaultError
from vaultdoit.model import DEFAULT_APT_PORT, GUEST_HOST, AptRoute

SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class AptProxy:
    """Where our apt-cacher-ng lives and listens."""

    root: Path  # cache/apt
    port: int = DEFAULT_APT_PORT

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "apt-cacher-ng.pid"

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}"


def managed(route: AptRoute) -> AptProxy | None:
    """The build's own apt-cacher-ng, when the build's APT route goes through one."""
    return AptProxy(route.managed_root, route.managed_port) if route.managed_root is not None else None


def host_mirrors(sources: tuple[Path, ...] = SOURCES) -> list[str]:
    """Debian archive URLs the host's own apt uses (not the security archive)."""
    files: list[Path] = []
    for item in sources:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix in (".list", ".sources"))
        elif item.is_file():
            files.append(item)
    urls: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            found = re.findall(r"^URIs:\s*(.+)$", text, re.M)
            candidates = [u for line in found for u in line.split()]
        else:
            candidates = [m.group(1) for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)]
        for url in candidates:
            if url.startswith("http") and "security" not in url and url.rstrip("/").endswith("/debian"):
                url = url.rstrip("/") + "/"
                if url not in urls:
                    urls.append(url)
    return urls


def config_text(proxy: AptProxy) -> str:
    """acng.conf for our instance: our folders, loopback only, Debian remapped to the host's mirror."""
    return "\n".join([
        "# Written by vaultdoit: a private instance for image builds.",
        f"CacheDir: {proxy.data_dir}",
        f"LogDir: {proxy.log_dir}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"Port: {proxy.port}",
        "BindAddress: 127.0.0.1",
        f"PidFile: {proxy.pid_file}",
        # Its own control socket: the default one in /run is shared with any other instance.
        f"SocketPath: {proxy.pid_file.parent / 'socket'}",
        "ForeGround: 0",
        # Requests for any known Debian mirror are served from the host's mirror.
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian",
        "Remap-secdeb: security.debian.org security.debian.org/debian-security "
        "deb.debian.org/debian-security /debian-security ; deb.debian.org/debian-security security.debian.org",
        "ReportPage: acng-report.html",
        "UnbufferLogs: 1",  # traffic figures are read right after each stage
        "ExThreshold: 4",
        "",
    ])


def _pid(proxy: AptProxy) -> int | None:
    try:
        pid = int(proxy.pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def healthy(proxy: AptProxy, timeout: float = 2.0) -> bool:
    """True when our instance runs and answers its report page."""
    if _pid(proxy) is None:
        return False
    try:
        import urllib.request  # only when a build asks (the task builders import this module)

        with urllib.request.urlopen(f"{proxy.host_url}/acng-report.html", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def serving(proxy: AptProxy) -> bool:
    """Cheap check for a no-op run: our instance is alive, listens, and runs this configuration.

    (No HTTP round trip: that is ``healthy``, for when the proxy is started.)
    """
    if _pid(proxy) is None or not _port_taken(proxy.port):
        return False
    conf = proxy.conf_dir / "acng.conf"
    try:
        return conf.read_text() == config_text(proxy)
    except OSError:
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(proxy: AptProxy, *, mirrors: list[str] | None = None, logfile: Path | None = None) -> str:
    """Make sure our apt-cacher-ng serves on loopback; return its URL for the host."""
    conf = proxy.conf_dir / "acng.conf"
    if healthy(proxy):
        if conf.exists() and conf.read_text() == config_text(proxy):
            return proxy.host_url
        stop(proxy)  # started by an older configuration: restart with this one
    if _port_taken(proxy.port):
        raise VaultError(f"port 127.0.0.1:{proxy.port} is used by another program",
                         hint="stop it, or set apt_proxy_port (or apt_proxy = \"http://...\") in vault.toml")
    mirrors = mirrors if mirrors is not None else host_mirrors()
    if not mirrors:
        raise VaultError("no Debian mirror found in the host's apt sources", file="/etc/apt/sources.list.d",
                         hint='set apt_proxy = "off" or an external proxy URL in vault.toml')
    for folder in (proxy.conf_dir, proxy.data_dir, proxy.log_dir, proxy.pid_file.parent):
        folder.mkdir(parents=True, exist_ok=True)
    conf.write_text(config_text(proxy))
    (proxy.conf_dir / "backends_debian").write_text("".join(f"{m}\n" for m in mirrors))
    # The one program meant to outlive the build: it daemonises, later builds reuse it.
    proc.run(["apt-cacher-ng", "-c", str(proxy.conf_dir)], logfile=logfile, daemon=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if healthy(proxy, timeout=1.0):
            return proxy.host_url
        time.sleep(0.2)
    stop(proxy)
    raise VaultError("apt-cacher-ng did not come up within 15 s", file=proxy.log_dir / "apt-cacher.err",
                     hint="see its error log")


def stop(proxy: AptProxy, timeout: float = 10.0) -> bool:
    """Stop our instance; True if one was running."""
    pid = _pid(proxy)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    proxy.pid_file.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Traffic:
    """What apt-cacher-ng logged: bytes fetched upstream and served to clients."""

    upstream_bytes: int = 0
    upstream_files: int = 0
    upstream_debs: int = 0
    served_bytes: int = 0
    served_files: int = 0

    @property
    def hit_ratio(self) -> float:
        return 1.0 - self.upstream_bytes / self.served_bytes if self.served_bytes else 0.0


def traffic(proxy: AptProxy, since: float = 0.0) -> Traffic:
    """Totals from apt-cacher.log (``time|I|bytes|client|path``: I = from upstream, O = to clients)."""
    log = proxy.log_dir / "apt-cacher.log"
    if not log.exists():
        return Traffic()
    up = upf = debs = out = outf = 0
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[0].isdigit() or int(parts[0]) < since:
            continue
        size = int(parts[2]) if parts[2].isdigit() else 0
        if parts[1] == "I":
            up += size
            upf += 1
            debs += parts[4].endswith(".deb")
        elif parts[1] == "O":
            out += size
            outf += 1
    return Traffic(up, upf, debs, out, outf)


def disk_usage(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files
