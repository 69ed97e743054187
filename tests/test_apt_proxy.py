"""The build's own apt-cacher-ng: host mirrors, loopback-only config, start/stop, traffic."""

from __future__ import annotations

import dataclasses
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, low_free_port
from vaultdoit import apt_proxy, plan
from vaultdoit.model import AptRoute


def test_host_mirrors_from_deb822_and_one_line_sources(tmp_path: Path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian/ bookworm main\n"
                                           "deb https://vendor.example/apt stable main\n")
    assert apt_proxy.host_mirrors((tmp_path / "sources.list", d)) == [
        "http://other.example/debian/", "http://mirror.example/debian/"]


def test_config_listens_on_loopback_in_our_folders(tmp_path: Path):
    proxy = apt_proxy.AptProxy(tmp_path, 3999)
    text = apt_proxy.config_text(proxy)
    assert "BindAddress: 127.0.0.1" in text and "Port: 3999" in text
    assert f"CacheDir: {tmp_path / 'data'}" in text and "/etc/apt-cacher-ng" not in text
    assert proxy.guest_url == "http://10.0.2.2:3999"


def test_traffic_from_the_log(tmp_path: Path):
    proxy = apt_proxy.AptProxy(tmp_path)
    proxy.log_dir.mkdir()
    (proxy.log_dir / "apt-cacher.log").write_text(
        "100|I|500|127.0.0.1|debrep/pool/a.deb\n100|O|500|127.0.0.1|debrep/pool/a.deb\n"
        "200|O|500|127.0.0.1|debrep/pool/a.deb\n200|I|10|127.0.0.1|debrep/dists/x/InRelease\n")
    t = apt_proxy.traffic(proxy, since=150)
    assert (t.upstream_bytes, t.upstream_debs, t.served_files) == (10, 0, 1)
    assert apt_proxy.traffic(proxy).upstream_debs == 1


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("apt-cacher-ng") is None, reason="needs apt-cacher-ng")
def test_real_instance_serves_on_loopback_and_stops(tmp_path: Path):
    proxy = apt_proxy.AptProxy(tmp_path / "apt", low_free_port())
    try:
        assert apt_proxy.start(proxy) == proxy.host_url
        assert apt_proxy.healthy(proxy)
        # A second start finds it running.
        assert apt_proxy.start(proxy) == proxy.host_url
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.host_url}))
        mirror = apt_proxy.host_mirrors()[0]
        with opener.open(f"{mirror}dists/bookworm/Release", timeout=60) as resp:
            assert b"Codename: bookworm" in resp.read()
        # apt-cacher-ng logs a transfer after it has answered: wait for the entry, never race it.
        deadline = time.monotonic() + 30
        while apt_proxy.traffic(proxy).served_files < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert apt_proxy.traffic(proxy).served_files >= 1
    finally:
        assert apt_proxy.stop(proxy)
    assert not apt_proxy.healthy(proxy)


def test_external_proxy_replaces_ours_and_off_disables():
    from vaultdoit.plan import load_project

    team = load_project(REPO)
    assert team.apt.managed_root is not None or shutil.which("apt-cacher-ng") is None
    cfg = dataclasses.replace(team.config, apt_proxy="http://proxy.internal:3142")
    route = plan._apt_route(cfg, team.packer)
    assert (route.host_url, route.guest_url, route.managed_root) == (
        "http://proxy.internal:3142", "http://proxy.internal:3142", None)
    assert plan._apt_route(dataclasses.replace(cfg, apt_proxy="off"), team.packer) == AptRoute()
