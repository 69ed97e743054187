"""The shared stage cache against a real registry (docker-registry on 127.0.0.1).

Stages are built by the fake packer (real qcow2 images made with qemu-img),
so these tests exercise the orchestration: who pulls, who builds, what is
pushed, what is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import VENV_BIN, clone, fake_packer_env, packer_runs, ran_tasks, run_doit
from registry import LocalRegistry, available, free_port

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
    pytest.mark.integration,
]

STAGES = ["base", "mid", "top"]



def remote_env(root: Path, work: Path, repository: str, **extra: str) -> dict[str, str]:
    env = fake_packer_env(root, work)
    env["VAULTDOIT_REMOTE_CACHE"] = repository
    env.update(extra)
    return env


def build(root: Path, env: dict[str, str], *args: str) -> tuple[set[str], str]:
    """Run doit; the tasks it ran and everything it printed on stderr (our notes)."""
    proc = run_doit(root, "--reporter=json", *(args or ("final_image",)), env=env)
    report = json.loads(proc.stdout)
    return ran_tasks(proc.stdout), proc.stderr + "".join(t.get("err", "") for t in report["tasks"])


def vaultdoit(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def record(root: Path, stage: str) -> dict:
    return json.loads((root / "build/stages" / stage / ".vaultdoit-stage.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image(root: Path, stage: str) -> Path:
    return root / "build/stages" / stage / f"{stage}.qcow2"


def tag_of(root: Path, stage: str) -> str:
    """The registry tag of a built stage: its key, on its parent's image."""
    own = record(root, stage)
    parent = {"mid": "base", "top": "mid"}.get(stage)
    if parent is None:
        return own["key"]
    return f"{own['key']}-on-{record(root, parent)['image_sha256'].split(':')[1][:16]}"


def test_a_second_clone_pulls_everything_the_first_built(tmp_path: Path, registry: LocalRegistry):
    a, b = clone(tmp_path, "a"), clone(tmp_path, "elsewhere/deeper")
    ran, err = build(a, remote_env(a, tmp_path / "fa", registry.repository()))
    assert packer_runs(tmp_path / "fa") == STAGES
    assert err.count("pushed to") == 3 and "Traceback" not in err
    assert len(registry.tags()) == 3

    ran, err = build(b, remote_env(b, tmp_path / "fb", registry.repository()))
    assert ran == {"stage:base", "stage:mid", "stage:top", "final_image"}
    assert packer_runs(tmp_path / "fb") == [], err
    assert err.count("pulled from") == 3
    for stage in STAGES:
        assert sha256(image(b, stage)) == sha256(image(a, stage))
        assert record(b, stage)["key"] == record(a, stage)["key"]
        assert record(b, stage)["pulled"]["from"] == f"{registry.repository()}:{tag_of(a, stage)}"
    # The pulled overlays stand on B's own parents (their references are relative).
    chain = json.loads(subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                                       str(image(b, "top"))], capture_output=True, text=True, check=True).stdout)
    assert [Path(i["filename"]).resolve() for i in chain] == [image(b, s).resolve() for s in reversed(STAGES)]
    assert all(not i.get("backing-filename", "x").startswith("/") for i in chain[:-1])

    # doit counts what it pulled as built: nothing more to do, and explain says where it came from.
    assert build(b, remote_env(b, tmp_path / "fb", registry.repository()))[0] == set()
    explained = vaultdoit(b, "explain", "stage:top").stdout
    assert f"key: {record(a, 'top')['key']}" in explained
    assert f"image: pulled from {registry.repository()}:{tag_of(a, 'top')}" in explained
    shown = vaultdoit(b, "cache", "status", env={"VAULTDOIT_REMOTE_CACHE": registry.repository()}).stdout
    assert f"remote  {registry.repository()}: pulls, and pushes the stages built here" in shown
    assert f"stage top: pulled from {registry.repository()}:{tag_of(a, 'top')}" in shown
    manifest = json.loads((b / "build/final/team.qcow2.manifest.json").read_text())
    assert [s["key"] for s in manifest["stages"]] == [record(a, s)["key"] for s in STAGES]
    assert manifest["stages"][-1]["pulled_from"].startswith(registry.repository())

    # What registry tools show: the key, the parent's key, the tools, the record.
    notes = registry.manifest(tag_of(a, "top"))["annotations"]
    assert notes["io.vaultdoit.stage.key"] == record(a, "top")["key"]
    assert notes["io.vaultdoit.stage.parent-key"] == record(a, "mid")["key"]
    assert json.loads(notes["io.vaultdoit.stage.tools"]) == record(a, "top")["tools"]
    assert json.loads(notes["io.vaultdoit.stage.record"])["image_sha256"] == record(a, "top")["image_sha256"]


def test_a_changed_playbook_misses_exactly_that_stage_and_its_children(tmp_path: Path, registry: LocalRegistry):
    a = clone(tmp_path, "a")
    build(a, remote_env(a, tmp_path / "fa", registry.repository()))
    b = clone(tmp_path, "b")
    with open(b / "ansible/mid.yml", "a") as fh:
        fh.write("# changed in clone b\n")
    _ran, err = build(b, remote_env(b, tmp_path / "fb", registry.repository()))
    assert packer_runs(tmp_path / "fb") == ["mid", "top"]
    assert "stage base: pulled from" in err
    assert "stage mid: not in the remote cache" in err and "stage top: not in the remote cache" in err
    assert record(b, "base")["key"] == record(a, "base")["key"]
    assert record(b, "mid")["key"] != record(a, "mid")["key"]
    assert len(registry.tags()) == 5  # B pushed its two new stages

    c = clone(tmp_path, "c")
    shutil.copyfile(b / "ansible/mid.yml", c / "ansible/mid.yml")
    build(c, remote_env(c, tmp_path / "fc", registry.repository()))
    assert packer_runs(tmp_path / "fc") == []


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_corrupt_blob_is_rejected_and_the_stage_built_here(tmp_path: Path, registry: LocalRegistry, damage: str):
    a = clone(tmp_path, "a")
    build(a, remote_env(a, tmp_path / "fa", registry.repository()))
    layer = registry.manifest(tag_of(a, "top"))["layers"][0]
    blob = registry.blob_file(layer["digest"])
    data = bytearray(blob.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    b = clone(tmp_path, "b")
    _ran, err = build(b, remote_env(b, tmp_path / "fb", registry.repository()))
    assert packer_runs(tmp_path / "fb") == ["top"]
    rejected = [line for line in err.splitlines() if "discarded what the remote cache sent" in line]
    assert len(rejected) == 1 and rejected[0].startswith("vaultdoit: warning: stage top:"), err
    assert layer["digest"][:19] in rejected[0]
    assert ("does not match its digest" if damage == "flip a byte" else "truncated") in rejected[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in image(b, "top").parent.iterdir()) == [".vaultdoit-stage.json", "top.qcow2"]
    assert "pulled" not in record(b, "top")
    # B pushed the stage it built in place of the damaged one: the next clone gets sound data.
    c = clone(tmp_path, "c")
    build(c, remote_env(c, tmp_path / "fc", registry.repository()))
    assert packer_runs(tmp_path / "fc") == []
    assert sha256(image(c, "top")) == sha256(image(b, "top"))


def test_registry_stopped_mid_run_falls_back_to_local_builds(tmp_path: Path, registry: LocalRegistry):
    a = clone(tmp_path, "a")
    build(a, remote_env(a, tmp_path / "fa", registry.repository()))
    b = clone(tmp_path, "b")
    with open(b / "ansible/base.yml", "a") as fh:
        fh.write("# changed in clone b\n")
    assert registry.process is not None
    # base misses; while it builds the registry dies; its push and every later lookup fail.
    env = remote_env(b, tmp_path / "fb", registry.repository(), FAKE_PACKER_KILL=f"base:{registry.process.pid}")
    start = time.monotonic()
    ran, err = build(b, env)
    assert time.monotonic() - start < 60  # no retries with back-off
    assert ran == {"stage:base", "stage:mid", "stage:top", "final_image"}
    assert packer_runs(tmp_path / "fb") == STAGES
    warnings = [line for line in err.splitlines() if "unavailable" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"vaultdoit: warning: remote cache {registry.repository()}")
    assert "building locally" in warnings[0] and "Traceback" not in err


def test_an_unreachable_registry_is_one_warning_and_a_local_build(tmp_path: Path):
    a = clone(tmp_path, "a")
    nobody = f"127.0.0.1:{free_port()}/team/stages"
    ran, err = build(a, remote_env(a, tmp_path / "fa", nobody))
    assert packer_runs(tmp_path / "fa") == STAGES
    assert [line for line in err.splitlines() if "warning" in line] == [
        f"vaultdoit: warning: remote cache {nobody} unavailable (cannot reach 127.0.0.1:{nobody.split(':')[1].split('/')[0]}: "
        "connection refused); building locally"]


def test_large_stages_are_stored_in_layers_of_the_chunk_size(tmp_path: Path, registry: LocalRegistry):
    a = clone(tmp_path, "a")
    (a / "vault.toml").write_text(f'remote_cache = "{registry.repository()}"\nremote_chunk_size = "1M"\n')
    env = fake_packer_env(a, tmp_path / "fa")
    env["FAKE_PACKER_RANDOM"] = f"top:{3 * 2**20 + 2**19}"  # 3.5 MiB of random data
    build(a, env)
    layers = registry.manifest(tag_of(a, "top"))["layers"]
    parts = [lay for lay in layers if lay["mediaType"] == "application/vnd.vaultdoit.stage.image.part.v1"]
    assert len(parts) >= 4 and all(p["size"] <= 2**20 for p in parts)
    assert sum(p["size"] for p in parts) == image(a, "top").stat().st_size
    assert len({p["digest"] for p in parts}) == len(parts)  # random data: no two pieces alike
    # A second push finds every layer in the registry and sends nothing.
    again = vaultdoit(a, "cache", "push", "top")
    assert again.returncode == 0, again.stderr
    assert f"{len(layers)} of {len(layers)} layers already there" in again.stdout and "(0.0 MiB" in again.stdout

    b = clone(tmp_path, "b")
    (b / "vault.toml").write_text((a / "vault.toml").read_text())
    build(b, fake_packer_env(b, tmp_path / "fb"))
    assert packer_runs(tmp_path / "fb") == []
    assert sha256(image(b, "top")) == sha256(image(a, "top"))


@pytest.mark.parametrize("how", ["environment", "doit variable", "vault.toml"])
def test_pushing_can_be_turned_off(tmp_path: Path, registry: LocalRegistry, how: str):
    a = clone(tmp_path, "a")
    env = remote_env(a, tmp_path / "fa", registry.repository())
    args: tuple[str, ...] = ("final_image",)
    if how == "environment":
        env["VAULTDOIT_REMOTE_PUSH"] = "0"
    elif how == "doit variable":
        args = ("final_image", "remote_push=0")
    else:
        (a / "vault.toml").write_text("remote_push = false\n")
    _ran, err = build(a, env, *args)
    assert packer_runs(tmp_path / "fa") == STAGES and "pushed" not in err
    assert registry.tags() == []
    # By hand, a push is asked for: it happens.
    pushed = vaultdoit(a, "cache", "push", env={"VAULTDOIT_REMOTE_CACHE": registry.repository()})
    assert pushed.returncode == 0 and pushed.stdout.count("pushed to") == 3
    assert len(registry.tags()) == 3


def test_pull_by_hand_then_doit_builds_nothing(tmp_path: Path, registry: LocalRegistry):
    a = clone(tmp_path, "a")
    build(a, remote_env(a, tmp_path / "fa", registry.repository()))
    b = clone(tmp_path, "b")
    env = {"VAULTDOIT_REMOTE_CACHE": registry.repository()}
    pulled = vaultdoit(b, "cache", "pull", "mid", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert [line.split(":")[0] for line in pulled.stdout.splitlines()] == ["stage base", "stage mid"]
    assert "up to date" in vaultdoit(b, "explain", "stage:mid").stdout.splitlines()[0]
    assert vaultdoit(b, "cache", "pull", env=env).stdout.splitlines()[:2] == [
        "stage base: up to date here", "stage mid: up to date here"]
    ran, _err = build(b, fake_packer_env(b, tmp_path / "fb"))
    assert ran == {"final_image"} and packer_runs(tmp_path / "fb") == []


def test_without_a_remote_cache_the_commands_say_how_to_set_one(project_copy):
    root = project_copy("team")
    out = vaultdoit(root, "cache", "pull")
    assert out.returncode == 2
    assert "no remote cache is configured" in out.stderr and "VAULTDOIT_REMOTE_CACHE" in out.stderr


def keyed(root: Path) -> Path:
    """The base stage hands the build's public key to its playbook, as a bootstrapped base authorizes it."""
    template = root / "packer/base.pkr.hcl"
    template.write_text(template.read_text().replace(
        "    use_proxy     = false\n",
        '    use_proxy     = false\n    extra_arguments = ["--extra-vars", '
        '"build_pubkey=${abspath("build/keys/build_ed25519.pub")}"]\n', 1))
    return root


def test_clones_share_stages_only_when_they_share_the_build_key(tmp_path: Path, registry: LocalRegistry):
    a = keyed(clone(tmp_path, "a"))
    build(a, remote_env(a, tmp_path / "fa", registry.repository()), "keys", "final_image")
    assert "build/keys/build_ed25519.pub" in record(a, "base")["inputs"]
    # Its own key: every key differs from A's, everything is built.
    b = keyed(clone(tmp_path, "b"))
    build(b, remote_env(b, tmp_path / "fb", registry.repository()), "keys", "final_image")
    assert packer_runs(tmp_path / "fb") == STAGES
    # A's key, distributed like a CI secret: nothing is built.
    secret = tmp_path / "secrets/build_ed25519"
    secret.parent.mkdir()
    secret.write_bytes((a / "build/keys/build_ed25519").read_bytes())
    secret.chmod(0o600)
    c = keyed(clone(tmp_path, "c"))
    build(c, remote_env(c, tmp_path / "fc", registry.repository(), VAULTDOIT_BUILD_KEY=str(secret)),
          "keys", "final_image")
    assert packer_runs(tmp_path / "fc") == []
    assert (c / "build/keys/build_ed25519.pub").read_bytes().split()[:2] == \
        (a / "build/keys/build_ed25519.pub").read_bytes().split()[:2]
    assert (c / "build/keys/build_ed25519").stat().st_mode & 0o777 == 0o600
    assert (c / "build/keys/access_ed25519").exists()  # made here: not shared


@pytest.fixture
def locked_registry(tmp_path: Path):
    """A registry that takes only user alice with password secret (htpasswd, Basic auth)."""
    crypt = pytest.importorskip("crypt")
    if not available():
        pytest.skip("needs docker-registry")
    folder = tmp_path / "locked"
    folder.mkdir()
    htpasswd = folder / "htpasswd"
    # bcrypt cost 4 (rounds=16): the registry checks the password on every request.
    htpasswd.write_text(f"alice:{crypt.crypt('secret', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    server = LocalRegistry(folder, htpasswd=htpasswd)
    server.start()
    yield server
    server.stop()


def test_credentials_come_from_docker_config_or_the_environment(tmp_path: Path, locked_registry: LocalRegistry):
    a = clone(tmp_path, "a")
    repo = locked_registry.repository()
    empty = tmp_path / "no-docker"
    empty.mkdir()
    _ran, err = build(a, remote_env(a, tmp_path / "fa", repo, DOCKER_CONFIG=str(empty), HOME=str(empty)))
    assert packer_runs(tmp_path / "fa") == STAGES
    assert "asks for a user name and password and none is configured" in err

    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(b"alice:secret").decode()
    (docker / "config.json").write_text(json.dumps({"auths": {locked_registry.host: {"auth": auth}}}))
    pushed = vaultdoit(a, "cache", "push", env={"VAULTDOIT_REMOTE_CACHE": repo, "DOCKER_CONFIG": str(docker)})
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.count("pushed to") == 3

    b = clone(tmp_path, "b")
    env = remote_env(b, tmp_path / "fb", repo, DOCKER_CONFIG=str(empty), HOME=str(empty),
                     VAULTDOIT_REGISTRY_USER="alice", VAULTDOIT_REGISTRY_PASSWORD="secret")
    build(b, env)
    assert packer_runs(tmp_path / "fb") == []
    wrong = vaultdoit(b, "cache", "push", env={**env, "VAULTDOIT_REGISTRY_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "answered 401" in wrong.stderr and "Traceback" not in wrong.stderr


PUSH_SCRIPT = """
import sys
from pathlib import Path
from vaultdoit import remote
from vaultdoit.buildspec import RemoteCache, StageBuild
from vaultdoit.model import Stage

path, repository, root = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
stage = Stage(name="big", kind="packer", output=path, parent=None, inputs=(), settings={})
build = StageBuild(stage=stage, ancestors=(), root=root, state_dir=root / "state", logfile=root / "log",
                   digests=root / "digests.json")
spec = RemoteCache(repository, chunk_size=256 * 2**20)
result = remote.push_stage(remote.Registry(repository), spec, build,
                           {"key": "0" * 64, "image_sha256": "sha256:unchecked", "tools": {}})
# Peak resident memory of this program (KiB): VmHWM starts afresh at exec, while getrusage's
# ru_maxrss keeps the peak of the forking parent (pytest, large after a long session).
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(result.layers, result.moved, result.skipped, peak)
"""


def test_pushing_a_multi_gigabyte_overlay_takes_little_memory(tmp_path: Path, registry: LocalRegistry):
    size = 2 * 2**30
    if shutil.disk_usage(tmp_path).free < 3 * size + 2**30:
        pytest.skip("needs 7 GiB free in the temp folder")
    big = tmp_path / "big.qcow2"
    # Sparse, with 1 MiB of random data in every 16 MiB: every 256 MiB layer is different, and
    # making the file costs little. The registry still receives all 2 GiB.
    with open(big, "wb") as fh:
        fh.truncate(size)
        for offset in range(0, size, 16 * 2**20):
            fh.seek(offset)
            fh.write(os.urandom(2**20))
    child = subprocess.run([str(VENV_BIN / "python"), "-c", PUSH_SCRIPT, str(big), registry.repository(),
                            str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    layers, moved, skipped, peak_kib = map(int, child.stdout.split())
    assert (layers, moved, skipped) == (8, size, 0)
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_a_cloud_image_root_is_never_pushed(tmp_path: Path, registry: LocalRegistry):
    """A first stage that is an overlay on a downloaded cloud image: only the overlay travels, and
    the puller's overlay stands on the cloud image it fetched itself."""
    import http.server
    import threading

    import test_iso_store as iso

    cloud = tmp_path / "served/cloud.qcow2"
    cloud.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(cloud), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4M", str(cloud)], check=True,
                   stdout=subprocess.DEVNULL)
    iso.Handler.requests, iso.Handler.files, iso.Handler.cut_after = [], {"cloud.qcow2": cloud.read_bytes()}, None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), iso.Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = f"http://127.0.0.1:{httpd.server_address[1]}"
        checksum = f"sha256:{sha256(cloud)}"
        a, b = tmp_path / "a/proj", tmp_path / "b/deeper/proj"
        for root in (a, b):
            iso._remote_project(root, server, checksum, backed=True, name="cloud.qcow2")
        build(a, remote_env(a, tmp_path / "fa", registry.repository()))
        own = json.loads((a / "build/os/.vaultdoit-stage.json").read_text())
        layers = registry.manifest(own["key"])["layers"]
        assert f"sha256:{sha256(cloud)}" not in {layer["digest"] for layer in layers}
        assert sum(layer["size"] for layer in layers) == (a / "build/os/os.qcow2").stat().st_size
        build(b, remote_env(b, tmp_path / "fb", registry.repository()))
        assert packer_runs(tmp_path / "fb") == []
        assert (b / "cache/isos/cloud.qcow2").is_file()  # fetched by b itself, from its URL
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(b / "build/os/os.qcow2")],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["backing-filename"] == "../../cache/isos/cloud.qcow2"
    finally:
        httpd.shutdown()
        httpd.server_close()
