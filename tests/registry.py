"""A real OCI registry for tests: Debian's docker-registry (CNCF distribution) on 127.0.0.1.

Each test gets its own instance with a temporary configuration and storage
folder; it is never the system service.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BINARY = "/usr/bin/docker-registry"

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: vaultdoit-tests
{auth}"""


def available() -> bool:
    return shutil.which(BINARY) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRegistry:
    """One docker-registry process on a free loopback port; ``repository`` is what remote_cache takes."""

    def __init__(self, folder: Path, htpasswd: Path | None = None) -> None:
        self.folder = folder
        self.storage = folder / "storage"
        self.port = free_port()
        self.config = folder / "config.yml"
        auth = f"auth:\n  htpasswd:\n    realm: vaultdoit-tests\n    path: {htpasswd}\n" if htpasswd else ""
        self.config.write_text(CONFIG.format(storage=self.storage, port=self.port, auth=auth))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def repository(self, name: str = "team/stages") -> str:
        return f"{self.host}/{name}"

    def start(self) -> None:
        log = open(self.folder / "registry.log", "ab")
        self.process = subprocess.Popen([BINARY, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.folder / 'registry.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> Any:
        request = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def manifest(self, tag: str, name: str = "team/stages") -> dict[str, Any]:
        data = self.get(f"{name}/manifests/{tag}")
        assert isinstance(data, dict)
        return data

    def tags(self, name: str = "team/stages") -> list[str]:
        try:
            return sorted(self.get(f"{name}/tags/list", accept="application/json").get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no repository yet: nothing was pushed
                return []
            raise

    def blob_file(self, digest: str) -> Path:
        hexa = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"
