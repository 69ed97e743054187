#!/usr/bin/python3
"""vault-health: is this machine fit to serve? Disk, GPU and services, from /etc/vault/monitor.json.

Run by vault-health.timer every few minutes and, with --first-boot, once by
vault-firstboot.service (which adds the image's own first-boot checks and
keeps the report in /var/lib/vault/firstboot.json). Prints one line per
check; exits 1 when a required check fails, so the unit shows as failed.
Standard library only: it runs on every image of the project.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

CONFIG = os.environ.get("VAULT_MONITOR_CONFIG", "/etc/vault/monitor.json")
REPORT = os.environ.get("VAULT_HEALTH_REPORT", "/run/vault/health.json")
FIRST_BOOT_REPORT = os.environ.get("VAULT_FIRSTBOOT_REPORT", "/var/lib/vault/firstboot.json")
NVIDIA_VENDOR = "0x10de"
DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA and 3D controllers


def nvidia_devices() -> int:
    """NVIDIA display or 3D controllers on the PCI bus (from sysfs: no tools needed)."""
    count = 0
    for device in glob.glob("/sys/bus/pci/devices/*"):
        try:
            vendor = open(os.path.join(device, "vendor")).read().strip()
            klass = open(os.path.join(device, "class")).read().strip()
        except OSError:
            continue
        if vendor == NVIDIA_VENDOR and klass[:6] in DISPLAY_CLASSES:
            count += 1
    return count


def check_gpu(policy: str) -> tuple[bool, str]:
    """policy: "optional" (report only), "present" (an NVIDIA device must work), "required"."""
    devices = nvidia_devices()
    working = 0
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        working = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0
    detail = f"{devices} NVIDIA device(s), {working} working"
    if policy == "required":
        return working > 0, detail
    if policy == "present":
        return devices == 0 or working >= devices, detail
    return True, detail


def check_disk(path: str, min_free_percent: float) -> tuple[bool, str]:
    usage = shutil.disk_usage(path)
    free = 100.0 * usage.free / usage.total
    return free >= min_free_percent, f"{free:.0f}% free (at least {min_free_percent:g}%)"


def check_unit(unit: str) -> tuple[bool, str]:
    state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip()
    return state == "active", state or "unknown"


def check_command(command: str) -> tuple[bool, str]:
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=600)
    return out.returncode == 0, f"exit {out.returncode}"


def run(first_boot: bool) -> int:
    try:
        with open(CONFIG) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"vault-health: cannot read {CONFIG}: {exc}")
        return 1
    results = []
    ok, detail = check_gpu(config.get("gpu_policy", "optional"))
    results.append({"check": "gpu", "ok": ok, "detail": detail})
    for path in config.get("disk_paths", ["/"]):
        ok, detail = check_disk(path, float(config.get("min_free_percent", 10)))
        results.append({"check": f"disk {path}", "ok": ok, "detail": detail})
    for unit in config.get("health_units", []):
        ok, detail = check_unit(unit)
        results.append({"check": f"unit {unit}", "ok": ok, "detail": detail})
    if first_boot:
        for command in config.get("first_boot_checks", []):
            ok, detail = check_command(command)
            results.append({"check": command, "ok": ok, "detail": detail})
    healthy = all(r["ok"] for r in results)
    for r in results:
        print(f"vault-health: {'ok  ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}")
    report = {"ok": healthy, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checks": results}
    target = FIRST_BOOT_REPORT if first_boot else REPORT
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, target)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(run("--first-boot" in sys.argv[1:]))
