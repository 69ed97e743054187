#!/opt/vault/venv/bin/python
"""vault-monitor: serve basic host metrics for Prometheus on loopback."""

import os
import time

from prometheus_client import Gauge, start_http_server

LOAD = Gauge("vault_load1", "1-minute load average")
UPTIME = Gauge("vault_uptime_seconds", "Seconds since boot")


def sample() -> None:
    LOAD.set(os.getloadavg()[0])
    with open("/proc/uptime") as fh:
        UPTIME.set(float(fh.read().split()[0]))


if __name__ == "__main__":
    start_http_server(int(os.environ.get("VAULT_MONITOR_PORT", "9101")), addr="127.0.0.1")
    while True:
        sample()
        time.sleep(5)
