#!/usr/bin/python3
"""vault-monitor: host, disk, GPU and service metrics for Prometheus, on loopback.

Standard library only, so it runs on every image of the project (Debian or
Ubuntu, with or without a GPU). Settings come from /etc/vault/monitor.json
(written by the monitoring role); the GPU figures come from nvidia-smi when
it is installed, else vault_gpu_count is 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = os.environ.get("VAULT_MONITOR_CONFIG", "/etc/vault/monitor.json")
# nvidia-smi query field -> metric name.
GPU_FIELDS = {
    "utilization.gpu": "vault_gpu_utilization_percent",
    "memory.used": "vault_gpu_memory_used_mib",
    "memory.total": "vault_gpu_memory_total_mib",
    "temperature.gpu": "vault_gpu_temperature_celsius",
}


def load_config() -> dict:
    try:
        with open(CONFIG) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def unit_states(units: list[str]) -> dict[str, bool]:
    """Whether each unit is active (one systemctl call for all of them)."""
    if not units:
        return {}
    out = subprocess.run(["systemctl", "is-active", *units], capture_output=True, text=True).stdout.split()
    return {unit: state == "active" for unit, state in zip(units, out + ["unknown"] * len(units))}


def gpus() -> list[list[str]]:
    """One row per GPU (index, then GPU_FIELDS), or none without nvidia-smi or a working driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-gpu=index," + ",".join(GPU_FIELDS)
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [[part.strip() for part in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def metrics(config: dict) -> str:
    lines = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    gauge("vault_load1", "1-minute load average", [("", os.getloadavg()[0])])
    with open("/proc/uptime") as fh:
        gauge("vault_uptime_seconds", "Seconds since boot", [("", float(fh.read().split()[0]))])
    disks = []
    for path in config.get("disk_paths", ["/"]):
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        disks.append((path, usage))
    gauge("vault_disk_free_bytes", "Free bytes of the file system holding the path",
          [(f'{{path="{_label(p)}"}}', u.free) for p, u in disks])
    gauge("vault_disk_size_bytes", "Size of the file system holding the path",
          [(f'{{path="{_label(p)}"}}', u.total) for p, u in disks])
    states = unit_states(config.get("units", []))
    gauge("vault_unit_active", "1 when the systemd unit is active",
          [(f'{{unit="{_label(u)}"}}', int(ok)) for u, ok in states.items()])
    rows = gpus()
    gauge("vault_gpu_count", "GPUs nvidia-smi reports", [("", len(rows))])
    for column, (field, name) in enumerate(GPU_FIELDS.items(), 1):
        samples = []
        for row in rows:
            try:
                samples.append((f'{{gpu="{row[0]}"}}', float(row[column])))
            except (IndexError, ValueError):
                continue
        if samples:
            gauge(name, f"nvidia-smi {field}", samples)
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = metrics(load_config()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # one line per scrape would fill the journal


def main() -> int:
    if sys.argv[1:] == ["--once"]:
        sys.stdout.write(metrics(load_config()))
        return 0
    config = load_config()
    server = ThreadingHTTPServer((config.get("bind", "127.0.0.1"), int(config.get("port", 9101))), Handler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
