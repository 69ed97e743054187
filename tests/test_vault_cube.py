"""The vault-cube profile (Ubuntu 24.04 GPU image), checked by everything that runs here.

It cannot be built on these machines (no Ubuntu archive, no NVIDIA
repositories, no GPU, no KVM): its templates, user-data and playbooks are
checked with Packer's, cloud-init's and Ansible's own checkers, its pins and
secrets by rule, and its plan by vaultdoit's planner. The monitoring pieces it
shares with `mini` run for real here and in the end-to-end test's boot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, VENV_BIN, run_doit

PACKER_DIR = REPO / "packer/vault-cube"
CUBE = REPO / "ansible/vault-cube"
USER_DATA = PACKER_DIR / "http/user-data"
VERSIONS = CUBE / "vars/versions.yml"
LOCKS = CUBE / "roles/frameworks/files/locks"
STAGES = ["base", "drivers", "frameworks", "final"]
PLAYBOOKS = sorted((REPO / "ansible").glob("*.yml")) + sorted(CUBE.glob("*.yml"))
TOOL_ENV = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1",
            "ANSIBLE_CONFIG": str(REPO / "ansible/ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}

needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer (scripts/setup)")


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=TOOL_ENV, cwd=REPO, **kwargs)


def packer_version() -> tuple[int, ...]:
    text = run(["packer", "version"]).stdout
    return tuple(int(p) for p in re.search(r"(\d+)\.(\d+)\.(\d+)", text).groups())  # type: ignore[union-attr]


def versions() -> dict[str, Any]:
    return yaml.safe_load(VERSIONS.read_text())


# --- Packer --------------------------------------------------------------------------------------------------


@needs_packer
def test_templates_pass_packer_validate(tmp_path: Path):
    """Syntax, then the full check of every source and provisioner (unknown attributes, bad values)."""
    syntax = run(["packer", "validate", "-syntax-only", str(PACKER_DIR)])
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    key = tmp_path / "build_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    for variant in ("demo", "production"):
        full = run(["packer", "validate", f"-var=ssh_private_key_file={key}", "-var=iso_checksum=none",
                    f"-var=build_dir={tmp_path}/stages", f"-var-file={PACKER_DIR}/variants/{variant}.pkrvars.hcl",
                    str(PACKER_DIR)])
        assert full.returncode == 0, full.stdout + full.stderr


@needs_packer
def test_the_plugins_block_reaches_only_newer_packer():
    """Packer loads every *.pkr.hcl of a folder: required_plugins lives in plugins/ alone."""
    for template in PACKER_DIR.glob("*.pkr.hcl"):
        assert "required_plugins" not in template.read_text(), template
    plugins = PACKER_DIR / "plugins/plugins.pkr.hcl"
    assert 'source  = "github.com/hashicorp/qemu"' in plugins.read_text()
    assert 'source  = "github.com/hashicorp/ansible"' in plugins.read_text()
    result = run(["packer", "validate", "-syntax-only", str(plugins.parent)])
    if packer_version() < (1, 7):
        assert result.returncode != 0 and "required_plugins" in result.stdout + result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr


def test_boot_command_keeps_build_values_out_of_the_installed_system():
    text = (PACKER_DIR / "stages.pkr.hcl").read_text()
    boot = "".join(re.findall(r'^\s*"(.*)",\s*$', text[text.index("boot_command"):text.index("qemuargs")], re.M))
    assert "autoinstall" in boot and "ds=nocloud;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/" in boot
    # Parameters after "---" are copied into the installed system's boot loader configuration.
    before, _, after = boot.partition("---")
    assert "vault.key=" in before and "vault.proxy=" in before and "vault." not in after
    assert "iso_url          = var.iso_url" in text and "iso_checksum     = var.iso_checksum" in text


# --- The autoinstall user-data -------------------------------------------------------------------------------


def user_data() -> dict[str, Any]:
    return yaml.safe_load(USER_DATA.read_text())


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="needs Debian's cloud-init (scripts/setup)")
def test_user_data_passes_cloud_init_schema(tmp_path: Path):
    """cloud-init's own schema check, on the file and on the installed system's user-data section."""
    inner = tmp_path / "inner.yaml"
    inner.write_text("#cloud-config\n" + yaml.safe_dump(user_data()["autoinstall"]["user-data"]))
    for path in (USER_DATA, inner):
        result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr


def test_user_data_has_what_autoinstall_requires():
    """The autoinstall schema is not available offline: its required keys and this profile's rules, by hand."""
    assert USER_DATA.read_text().startswith("#cloud-config\n")
    auto = user_data()["autoinstall"]
    assert auto["version"] == 1
    # identity is required unless a user-data section defines the users.
    users = auto["user-data"]["users"]
    assert "identity" in auto or users
    user = users[0]
    assert user["name"] == "vault" and user["lock_passwd"] is True and user["ssh_authorized_keys"] == ["@VAULT_BUILD_KEY@"]
    assert 'default = "vault"' in (PACKER_DIR / "variables.pkr.hcl").read_text()  # the template's ssh_username
    assert auto["ssh"] == {"install-server": True, "allow-pw": False}
    # Plain partitions, no swap file: the layout `vaultdoit scan` reads (it refuses LVM).
    assert auto["storage"]["layout"]["name"] == "direct" and auto["storage"]["swap"]["size"] == 0
    assert "lvm" not in json.dumps(auto["storage"]).lower()
    assert auto["apt"]["proxy"] == "@VAULT_APT_PROXY@"
    assert any("90curtin-aptproxy" in cmd for cmd in auto["late-commands"])
    assert (PACKER_DIR / "http/meta-data").exists()
    # Nothing of the build written down: no key, no proxy address.
    assert not re.search(r"ssh-(ed25519|rsa) AAAA|10\.0\.2\.2|127\.0\.0\.1", USER_DATA.read_text())


@pytest.mark.parametrize("proxy", ["http://10.0.2.2:31420", ""])
def test_early_commands_fill_in_the_build_values(tmp_path: Path, proxy: str):
    """The early-command script, run for real on a copy of the config and a made-up kernel command line."""
    script = user_data()["autoinstall"]["early-commands"][1]
    cmdline = tmp_path / "cmdline"
    key = "ssh-ed25519,AAAAC3NzaC1lZDI1NTE5AAAAIB+/x0"
    cmdline.write_text(f"BOOT_IMAGE=/casper/vmlinuz autoinstall ds=nocloud;s=http://10.0.2.2:8000/ "
                       f"vault.key={key} vault.proxy={proxy} console=ttyS0,115200 ---\n")
    config = tmp_path / "autoinstall.yaml"
    config.write_text(yaml.safe_dump(user_data()["autoinstall"]))
    script = script.replace("/proc/cmdline", str(cmdline)).replace("/autoinstall.yaml", str(config))
    subprocess.run(["sh", "-c", script], check=True)
    done = yaml.safe_load(config.read_text())
    assert done["user-data"]["users"][0]["ssh_authorized_keys"] == [key.replace(",", " ")]
    assert done["apt"] == ({"proxy": proxy} if proxy else None)
    assert "@VAULT_" not in yaml.safe_dump({k: v for k, v in done.items() if k != "early-commands"})


# --- Ansible -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: str(p.relative_to(REPO)))
def test_playbook_syntax(playbook: Path):
    result = run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ansible-lint", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}") is None,
                    reason="needs ansible-lint (the test extra)")
def test_ansible_lint_production_profile_offline():
    """ansible-lint's production profile on every playbook and role (settings in .ansible-lint)."""
    lint = shutil.which("ansible-lint", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    result = run([str(lint), "--offline", "--nocolor", "--profile", "production",
                  *(str(p.relative_to(REPO)) for p in PLAYBOOKS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def _tasks(node: Any) -> list[dict[str, Any]]:
    """Every task in a parsed task list or playbook, blocks and handlers included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += _tasks(item)
    elif isinstance(node, dict):
        if any(k in node for k in ("block", "rescue", "always", "tasks", "handlers", "pre_tasks", "post_tasks")):
            for key in ("block", "rescue", "always", "tasks", "handlers", "pre_tasks", "post_tasks"):
                found += _tasks(node.get(key))
        elif "name" in node or any("." in k for k in node):
            found.append(node)
    return found


def task_files() -> list[Path]:
    files = list(CUBE.glob("*.yml")) + list((CUBE / "roles").glob("*/tasks/*.yml"))
    files += list((CUBE / "roles").glob("*/handlers/*.yml"))
    files += list((REPO / "ansible/roles").glob("*/tasks/*.yml"))
    return sorted(files)


SECRET = re.compile(r"HF_TOKEN|hf_token|_token\b|ssh_private_key|build_ed25519\b(?!\.pub)|private_key")


def test_every_task_touching_a_secret_has_no_log():
    """The model token and the build's private key: every task that uses one hides its arguments and result."""
    touching = []
    for path in task_files():
        for task in _tasks(yaml.safe_load(path.read_text())):
            if SECRET.search(yaml.safe_dump(task)):
                touching.append(f"{path.relative_to(REPO)}: {task.get('name')}")
                assert task.get("no_log") is True, f"{path.relative_to(REPO)}: {task.get('name')!r} lacks no_log: true"
                assert "ansible.builtin.debug" not in task
    # The rule has something to check: the token reaches the gated download and its check.
    assert any("Start this batch" in t for t in touching) and any("token" in t for t in touching), touching


def test_the_token_is_never_written_to_a_file_or_argument():
    """The token goes only into a task's environment, never argv, a file or a variable file."""
    for path in task_files():
        for task in _tasks(yaml.safe_load(path.read_text())):
            for key, value in task.items():
                if key in ("environment", "name", "no_log", "when", "that") or not SECRET.search(yaml.safe_dump(value)):
                    continue
                assert key == "ansible.builtin.assert", f"{path}: {task.get('name')!r} puts the token in {key}"
    # No variable file or template stores one (a token would be a literal "hf_..." value).
    for path in [*CUBE.rglob("*"), *PACKER_DIR.rglob("*"), REPO / "vault.toml"]:
        if path.is_file():
            assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", path.read_text(errors="replace")), path


# --- Pins ----------------------------------------------------------------------------------------------------

# Version pins of the components versions.yml owns, as they would be written anywhere else.
PIN_PATTERNS = {
    "driver": re.compile(r"\b5[5-9]\d\.\d+\.\d+\b"),
    "cuda": re.compile(r"\b12\.\d\.\d+-\d\b|cuda-toolkit-12-\d=|\bcuda-12\.\d\b"),
    "cudnn": re.compile(r"\b9\.\d+\.\d+\.\d+\b"),
    "container toolkit": re.compile(r"\b1\.1[5-9]\.\d+-\d\b"),
    "frameworks": re.compile(r"\b(torch|tensorflow|vllm)(\[[a-z-]+\])?\s*==\s*\d"),
    "model revision": re.compile(r"\b[0-9a-f]{40}\b"),
    "key fingerprint": re.compile(r"\b[0-9A-F]{40}\b"),
}


def profile_files() -> list[Path]:
    roots = [PACKER_DIR, CUBE, REPO / "ansible/roles", REPO / "ansible/ansible.cfg", REPO / "vault.toml"]
    files: list[Path] = []
    for root in roots:
        files += [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return sorted(files)


def test_every_pin_lives_in_the_versions_file():
    assert [p for p in profile_files() if p == VERSIONS], "versions.yml is part of the profile"
    for path in profile_files():
        if path == VERSIONS or path.parent == LOCKS:
            continue
        text = path.read_text(errors="replace")
        for what, pattern in PIN_PATTERNS.items():
            hit = pattern.search(text)
            assert hit is None, f"{path.relative_to(REPO)} pins a {what} ({hit.group()}): move it to versions.yml"


def test_versions_file_pins_what_the_image_needs():
    v = versions()
    assert int(v["nvidia_driver_branch"]) >= 550 and v["nvidia_driver_version"].startswith(v["nvidia_driver_branch"])
    assert v["cuda_version"] == "12.4" and v["cuda_toolkit_version"].startswith("12.4.")
    assert v["cudnn_version"].startswith("9.")
    assert v["framework_pins"]["torch"]["torch"].startswith("2.")
    assert v["framework_pins"]["tensorflow"]["tensorflow[and-cuda]"].startswith("2.")
    assert "vllm" in v["framework_pins"]["torch"]
    assert {m["repo"] for m in v["models"]} == {"facebook/opt-125m", "meta-llama/Llama-2-7b-hf", "gpt2",
                                                "bert-base-uncased"}
    for model in v["models"]:
        assert re.fullmatch(r"[0-9a-f]{40}", model["revision"]), model  # a commit, not a branch
    assert [m["repo"] for m in v["models"] if m["gated"]] == ["meta-llama/Llama-2-7b-hf"]
    for fingerprint in (v["nvidia_cuda_key_fingerprint"], v["nvidia_container_key_fingerprint"]):
        assert re.fullmatch(r"[0-9A-F]{40}", fingerprint)


def wheel_lock() -> Any:
    sys.path.insert(0, str(CUBE / "roles/frameworks/files"))
    try:
        import wheel_lock as module
    finally:
        sys.path.pop(0)
    return module


def test_lock_files_are_checked_against_the_pins(tmp_path: Path):
    lock = wheel_lock()
    pins = versions()["framework_pins"]
    # The committed files are not generated yet (that downloads GBs): the build stops at its first step.
    problems = lock.check(pins, LOCKS)
    assert problems == [f"{env}.txt: no requirements yet: run scripts/lock-frameworks (needs internet)"
                        for env in pins], problems
    digest = "--hash=sha256:" + "0" * 64
    (tmp_path / "torch.txt").write_text(f"torch==2.5.1 \\\n    {digest}\nvllm==0.6.4.post1 {digest}\nnumpy==1.26.4 {digest}\n")
    (tmp_path / "tensorflow.txt").write_text(f"# header\ntensorflow==2.18.0 \\\n    {digest}\n")
    assert lock.check(pins, tmp_path) == []
    (tmp_path / "tensorflow.txt").write_text(f"tensorflow==2.17.0 {digest}\nkeras==3.6.0\n")
    assert lock.check(pins, tmp_path) == ["tensorflow.txt: keras has no --hash",
                                          "tensorflow.txt: tensorflow[and-cuda] is 2.17.0, versions.yml pins 2.18.0"]


def test_separate_environments_for_conflicting_frameworks():
    """PyTorch with vLLM in one environment, TensorFlow in another (their NVIDIA wheel pins conflict)."""
    pins = versions()["framework_pins"]
    assert set(pins) == {"torch", "tensorflow"}
    assert not any("tensorflow" in name for name in pins["torch"]) and "torch" not in pins["tensorflow"]
    checks = yaml.safe_load((CUBE / "final.yml").read_text())[0]["vars"]["first_boot_checks"]
    assert any("torch/bin/python -c 'import torch, vllm'" in c for c in checks)
    assert any("tensorflow/bin/python -c 'import tensorflow'" in c for c in checks)


# --- The plan ------------------------------------------------------------------------------------------------


def test_plan_chains_four_stages_through_the_iso_cache():
    from vaultdoit.plan import load_project

    project = load_project(REPO, "vault-cube")
    # demo and production differ in the final stage only: the three below are built once.
    assert [s.id for s in project.stages] == [*STAGES[:-1], "final:demo", "final:production"]
    assert [s.parent for s in project.stages] == [None, "base", "drivers", "frameworks", "frameworks"]
    assert [i.top for i in project.images] == ["final:demo", "final:production"]
    url, checksum, cached = project.stage("base").iso  # type: ignore[misc]
    assert url.endswith("-live-server-amd64.iso") and checksum.startswith("file:") and checksum.endswith("SHA256SUMS")
    assert cached == REPO / "cache/isos" / Path(url).name
    assert project.warnings == ()
    # VM resources change how a stage builds, not what it holds: they are in no stage's key.
    for stage in project.stages:
        assert not {"memory", "cpus", "accelerator"} & set(stage.settings["source"])


def test_each_stage_reads_exactly_its_playbook_and_template_files():
    """A stage's inputs: its playbook's closure, the files its template reads, the keys it is handed;
    nothing of another stage."""
    from vaultdoit.plan import load_project
    from vaultdoit.playbook import playbook_closure

    project = load_project(REPO, "vault-cube")
    cfg = project.config
    shared = {REPO / "ansible/ansible.cfg", *(REPO / "ansible/roles/image_common").rglob("*.yml"),
              CUBE / "vars/cube.yml", VERSIONS}
    own: dict[str, set[Path]] = {}
    for stage in project.stages:
        prov = stage.source.provisioners[0]  # type: ignore[union-attr]
        words = dict(w.split("=", 1) for w in prov.extra_arguments[1].split())
        closure = set(playbook_closure(prov.playbook_file, ansible_cfg=cfg.ansible_cfg,  # type: ignore[arg-type]
                                       extra_vars=words).files)
        expected = closure | {cfg.ansible_cfg}
        if stage.name == "base":
            expected |= {PACKER_DIR / "http/user-data", PACKER_DIR / "http/meta-data",
                         REPO / "build/keys/build_ed25519.pub", stage.iso[2]}  # type: ignore[index]
        if stage.name == "final":
            expected |= {REPO / "build/keys/access_ed25519.pub"}
        assert set(stage.inputs) == expected, stage.name
        own[stage.name] = closure - shared
    for name, files in own.items():
        for other, theirs in own.items():
            assert name == other or not files & theirs, (name, other, files & theirs)
    assert REPO / "ansible/roles/monitoring/files/bin/vault-monitor" in own["final"]
    assert REPO / "ansible/roles/cleanup/files/vault-build-cleanup" in own["final"]
    assert LOCKS / "torch.txt" in own["frameworks"]


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dodo.py", "vault.toml", "packer", "ansible", "python"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy2(src, root / name)
    return root


def test_doit_lists_and_explains_the_profile(tmp_path: Path):
    root = _copy(tmp_path)
    listed = run_doit(root, "list", "profile=vault-cube")
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    iso = "cache:iso-ubuntu-24.04.3-live-server-amd64.iso"
    variants = ("demo", "production")
    assert names == {"keys", "cache:apt", iso, *(f"stage:{s}" for s in STAGES[:-1]),
                     *(f"{family}:{v}" for family in ("stage:final", "final_image", "verify", "dev:final")
                       for v in variants),
                     *(f"dev:{s}" for s in STAGES[:-1]), "final_image", "verify"} - (
        set() if shutil.which("apt-cacher-ng") else {"cache:apt"})
    assert "warning" not in listed.stderr, listed.stderr
    # doit info exits 1 for a task that is not up to date; its listing is what counts here.
    info = run_doit(root, "info", "profile=vault-cube", "stage:base", check=False).stdout
    assert "packer/vault-cube/http/user-data" in info and f"cache/isos/{iso.split('-', 1)[1]}" in info
    explained = subprocess.run([str(VENV_BIN / "vaultdoit"), "-C", str(root), "--profile", "vault-cube",
                                "explain", "stage:frameworks"], capture_output=True, text=True)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "stage:frameworks" in explained.stdout


def test_the_variants_share_every_stage_but_the_final_one():
    from vaultdoit.plan import load_project

    project = load_project(REPO, "vault-cube")
    assert [s.id for s in project.stages if s.variant] == ["final:demo", "final:production"]
    demo, production = project.stage("final:demo"), project.stage("final:production")
    assert "variant=demo" in demo.source.provisioners[0].extra_arguments[1]  # type: ignore[union-attr]
    assert "variant=production" in production.source.provisioners[0].extra_arguments[1]  # type: ignore[union-attr]
    assert demo.output == REPO / "build/vault-cube/stages/demo/final/final.qcow2"
    assert production.output == REPO / "build/vault-cube/stages/production/final/final.qcow2"


# --- Monitoring (shared with mini; runs here too) --------------------------------------------------------------


def test_monitoring_scripts_run_on_this_host(tmp_path: Path):
    bin_dir = REPO / "ansible/roles/monitoring/files/bin"
    config = tmp_path / "monitor.json"
    config.write_text(json.dumps({"disk_paths": ["/", str(tmp_path)], "units": ["no-such.service"],
                                  "health_units": [], "gpu_policy": "present", "min_free_percent": 0,
                                  "first_boot_checks": ["true", "test -d /"]}))
    env = {**os.environ, "VAULT_MONITOR_CONFIG": str(config), "VAULT_FIRSTBOOT_REPORT": str(tmp_path / "fb.json")}
    out = subprocess.run([sys.executable, str(bin_dir / "vault-monitor"), "--once"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert 'vault_disk_free_bytes{path="/"}' in out and 'vault_unit_active{unit="no-such.service"} 0' in out
    assert re.search(r"^vault_gpu_count \d+$", out, re.M)
    health = subprocess.run([sys.executable, str(bin_dir / "vault-health"), "--first-boot"], capture_output=True,
                            text=True, env=env)
    report = json.loads((tmp_path / "fb.json").read_text())
    assert [c["check"] for c in report["checks"]] == ["gpu", "disk /", f"disk {tmp_path}", "true", "test -d /"]
    assert health.returncode == (0 if report["ok"] else 1)
    config.write_text(json.dumps({"disk_paths": ["/"], "min_free_percent": 101, "first_boot_checks": ["false"]}))
    failed = subprocess.run([sys.executable, str(bin_dir / "vault-health"), "--first-boot"], capture_output=True,
                            text=True, env=env)
    assert failed.returncode == 1 and "FAIL disk /" in failed.stdout and "FAIL false" in failed.stdout
