"""The ISO store against a loopback HTTP server: download, resume, checksums, offline."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from vaultdoit.errors import VaultError
from vaultdoit.iso_store import ChecksumError, fetch, parse_checksum

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str | None]] = []
    files: dict[str, bytes] = {}  # more files served whole, by name
    cut_after: int | None = None  # simulate a dropped connection after this many bytes

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        Handler.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/SHA256SUMS":
            body = f"{'0' * 64}  other.iso\n{SHA}  disk.iso\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.lstrip("/") in Handler.files:
            body = Handler.files[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path != "/disk.iso":
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(DATA) - start))
        self.end_headers()
        body = DATA[start:]
        if Handler.cut_after is not None:
            body = body[: Handler.cut_after]
            Handler.cut_after = None
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.requests = []
    Handler.files = {}
    Handler.cut_after = None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_and_verify(server: str, tmp_path: Path):
    path = fetch(f"{server}/disk.iso", f"sha256:{SHA}", tmp_path)
    assert path == tmp_path / "disk.iso" and path.read_bytes() == DATA
    assert not (tmp_path / "disk.iso.part").exists()
    # Present and verified: nothing is requested again.
    Handler.requests.clear()
    assert fetch(f"{server}/disk.iso", f"sha256:{SHA}", tmp_path) == path
    assert Handler.requests == []


def test_interrupted_download_resumes(server: str, tmp_path: Path):
    Handler.cut_after = 300_000
    with pytest.raises(VaultError, match="ended early"):
        fetch(f"{server}/disk.iso", f"sha256:{SHA}", tmp_path)
    assert not (tmp_path / "disk.iso").exists(), "a partial file never counts"
    assert (tmp_path / "disk.iso.part").stat().st_size == 300_000
    path = fetch(f"{server}/disk.iso", f"sha256:{SHA}", tmp_path)
    assert path.read_bytes() == DATA
    assert Handler.requests[-1] == ("/disk.iso", "bytes=300000-")


def test_checksum_mismatch_deletes_and_shows_both_digests(server: str, tmp_path: Path):
    wrong = "1" * 64
    with pytest.raises(ChecksumError) as info:
        fetch(f"{server}/disk.iso", f"sha256:{wrong}", tmp_path)
    assert f"expected {wrong}, got {SHA}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_checksum_list_url(server: str, tmp_path: Path):
    assert parse_checksum(f"file:{server}/SHA256SUMS", f"{server}/disk.iso") == ("sha256", SHA)
    assert fetch(f"{server}/disk.iso", f"file:{server}/SHA256SUMS", tmp_path).read_bytes() == DATA


def test_file_copied_in_by_hand_is_accepted(tmp_path: Path):
    (tmp_path / "disk.iso").write_bytes(DATA)
    assert fetch("http://127.0.0.1:9/disk.iso", f"sha256:{SHA}", tmp_path) == tmp_path / "disk.iso"


def test_local_paths_and_file_urls(tmp_path: Path):
    src = tmp_path / "src" / "disk.iso"
    src.parent.mkdir()
    src.write_bytes(DATA)
    assert fetch(str(src), SHA, tmp_path / "a").read_bytes() == DATA
    assert fetch(src.as_uri(), "none", tmp_path / "b").read_bytes() == DATA


def test_offline_error_says_where_to_put_the_file(tmp_path: Path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(VaultError) as info:
        fetch(f"http://127.0.0.1:{port}/disk.iso", f"sha256:{SHA}", tmp_path)
    assert f"put the file at {tmp_path / 'disk.iso'}" in str(info.value)


def test_remote_iso_becomes_a_cache_task_the_stage_depends_on(server: str, tmp_path: Path):
    from conftest import fake_packer_env, run_doit
    from vaultdoit.plan import load_project

    root = tmp_path / "proj"
    _remote_project(root, server, f"file:{server}/SHA256SUMS")
    project = load_project(root)
    (stage,) = project.stages
    assert stage.iso == (f"{server}/disk.iso", f"file:{server}/SHA256SUMS", root / "cache/isos/disk.iso")
    assert root / "cache/isos/disk.iso" in stage.inputs
    env = fake_packer_env(root, tmp_path / "fake")
    out = run_doit(root, "final_image", env=env)
    assert "cache:iso-disk.iso" in out.stdout
    assert (root / "cache/isos/disk.iso").read_bytes() == DATA
    argv = (root / "build/logs/stage-os.log").read_text().splitlines()[0]
    assert f"-var iso_url={root / 'cache/isos/disk.iso'}" in argv
    assert f"-var iso_checksum=sha256:{SHA}" in argv
    # Warm: nothing is fetched again.
    Handler.requests.clear()
    run_doit(root, "final_image", env=env)
    assert Handler.requests == []


def _remote_project(root: Path, server: str, checksum: str, *, backed: bool = False, name: str = "disk.iso") -> None:
    from conftest import TESTS

    (root / "packer").mkdir(parents=True)
    (root / "dodo.py").write_text((TESTS / "fixtures/projects/team/dodo.py").read_text())
    extra = "\n  disk_image       = true\n  use_backing_file = true\n  format           = \"qcow2\"" if backed else ""
    (root / "packer/t.pkr.hcl").write_text(f'''
variable "iso_url" {{
  default = "{server}/{name}"
}}
variable "iso_checksum" {{
  default = "{checksum}"
}}
source "qemu" "os" {{
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  output_directory = "build/os"
  vm_name          = "os.qcow2"{extra}
}}
build {{
  sources = ["source.qemu.os"]
}}
''')


def test_tampered_iso_is_checked_again_and_refused(server: str, tmp_path: Path):
    from conftest import fake_packer_env, packer_runs, run_doit

    root = tmp_path / "proj"
    _remote_project(root, server, f"sha256:{SHA}")
    env = fake_packer_env(root, tmp_path / "fake")
    run_doit(root, "final_image", env=env)
    assert packer_runs(tmp_path / "fake") == ["os"]
    cached = root / "cache/isos/disk.iso"
    with cached.open("r+b") as fh:  # same size, other bytes
        fh.write(b"tampered")
    out = run_doit(root, "final_image", env=env, check=False)
    assert out.returncode != 0
    assert f"sha256 mismatch: expected {SHA}" in out.stdout + out.stderr
    assert packer_runs(tmp_path / "fake") == []
    assert not cached.exists()
    # The next run fetches a good copy again and the chain builds from it.
    run_doit(root, "final_image", env=env)
    assert cached.read_bytes() == DATA


def test_changed_but_identical_iso_is_rehashed_once(server: str, tmp_path: Path):
    from vaultdoit import iso_store

    path = iso_store.fetch(f"{server}/disk.iso", f"sha256:{SHA}", tmp_path)
    assert iso_store.is_verified(path)
    os.utime(path, (1, 1))
    assert not iso_store.is_verified(path)
    assert iso_store.verified(path, f"sha256:{SHA}", f"{server}/disk.iso") == f"sha256:{SHA}"
    assert iso_store.is_verified(path)
    assert iso_store.verify_all(tmp_path) == [(path, None)]


@pytest.mark.parametrize("checksum", ["md9:abc", "sha256:xyz", "sha256:abcd", "abc"])
def test_malformed_checksum_is_refused_before_downloading(server: str, tmp_path: Path, checksum: str):
    from conftest import run_doit

    root = tmp_path / "proj"
    _remote_project(root, server, checksum)
    Handler.requests.clear()
    out = run_doit(root, "list", check=False)
    assert out.returncode == 2, out.stderr
    assert "iso_checksum" in out.stderr and "Traceback" not in out.stderr
    assert Handler.requests == []


def test_cloud_image_as_the_root_of_the_chain(server: str, tmp_path: Path):
    """A first stage built on a downloaded qcow2 with use_backing_file: the overlay is backed
    by the ISO-store copy, relatively, and the final image flattens the whole chain."""
    from conftest import fake_packer_env, packer_runs, run_doit
    from vaultdoit import qemu_img

    cloud = tmp_path / "served" / "cloud.qcow2"
    cloud.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(cloud), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", str(cloud)], check=True,
                   stdout=subprocess.DEVNULL)
    Handler.files["cloud.qcow2"] = cloud.read_bytes()
    digest = hashlib.sha256(cloud.read_bytes()).hexdigest()
    root = tmp_path / "proj"
    _remote_project(root, server, f"sha256:{digest}", backed=True, name="cloud.qcow2")
    env = fake_packer_env(root, tmp_path / "fake")
    run_doit(root, "final_image", env=env)
    assert packer_runs(tmp_path / "fake") == ["os"]
    stage_image = root / "build/os/os.qcow2"
    assert qemu_img.backing_of(stage_image) == "../../cache/isos/cloud.qcow2"
    final = root / "build/final/proj.qcow2"
    assert not qemu_img.info(final).get("backing-filename")
    # The root image's data (past what the fake build wrote) is in the flattened image.
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 7 512k 64k", str(final)],
                          capture_output=True, text=True)
    assert "Pattern verification failed" not in read.stdout and read.returncode == 0
    manifest = json.loads((root / "build/final/proj.qcow2.manifest.json").read_text())
    assert manifest["stages"][0]["root_image"] == "cache/isos/cloud.qcow2"
    assert run_doit(root, "--reporter=json", "final_image", env=env).stdout.count('"success"') == 0


def test_cache_verify_command_reports_a_changed_file(server: str, tmp_path: Path):
    from conftest import VENV_BIN
    from vaultdoit import iso_store

    root = tmp_path / "proj"
    _remote_project(root, server, f"sha256:{SHA}")
    path = iso_store.fetch(f"{server}/disk.iso", f"sha256:{SHA}", root / "cache/isos")
    ok = subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), "cache", "verify"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "1 files checked, 0 failed" in ok.stdout
    with path.open("r+b") as fh:
        fh.write(b"x")
    bad = subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), "cache", "verify"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"FAIL  {path}: sha256 mismatch" in bad.stdout
