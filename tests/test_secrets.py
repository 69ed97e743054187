"""Secrets stay out: values of sensitive variables and credentials from the environment appear in
no log, report, manifest, SBOM, signature or doit database of a build (fake packer), though
Packer gets them."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import fake_packer_env, run_doit
from vaultdoit import signing

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("qemu-img", "ssh-keygen")),
                                reason="needs qemu-img and ssh-keygen")

SENSITIVE = '''
variable "registry_token" {
  type      = string
  default   = ""
  sensitive = true
}

variable "db_password" {
  type      = string
  default   = ""
  sensitive = true
}

variable "api_key" {
  type      = string
  default   = ""
  sensitive = true
}
'''


def planted(project_copy, tmp_path: Path, *, in_settings: bool) -> tuple[Path, dict[str, str], dict[str, str]]:
    """The team project with secrets planted; (root, env, {what: secret})."""
    root = project_copy("team")
    secrets = {what: f"{what}-{uuid.uuid4().hex}" for what in
               ("vault.toml sensitive", "PKR_VAR_ sensitive", "environment credential")}
    with (root / "packer/variables.pkr.hcl").open("a") as fh:
        fh.write(SENSITIVE)
    name = "db_password" if in_settings else "registry_token"
    (root / "vault.toml").write_text(f'[variables]\n{name} = "{secrets["vault.toml sensitive"]}"\n')
    if in_settings:
        # Used in a provisioner setting: the resolved settings (the stage's key) hold it.
        layers = root / "packer/layers.pkr.hcl"
        layers.write_text(layers.read_text().replace(
            'extra_arguments = ["--extra-vars", "flavour=mid"]',
            'extra_arguments = ["--extra-vars", "flavour=mid db_password=${var.db_password} api_key=${var.api_key}"]'))
    key = tmp_path / "keys/release_ed25519"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = fake_packer_env(root, tmp_path / "work")
    env.update({
        "PKR_VAR_api_key": secrets["PKR_VAR_ sensitive"],
        "AWS_SECRET_ACCESS_KEY": secrets["environment credential"],
        "FAKE_PACKER_ARGS": str(tmp_path / "work/args.jsonl"),
        "FAKE_PACKER_ECHO": "1",
        signing.ENV: str(key),
    })
    return root, env, secrets


def leaks(root: Path, secrets: dict[str, str], *outputs: str) -> list[str]:
    """Every file under build/ and cache/ (and the command's output) that holds a secret: logs,
    reports, manifest, SBOM, signatures, doit's database, the plan cache, and the stage records
    beside the images (what the remote cache's registry annotations are made of)."""
    found = []
    for folder in ("build", "cache"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path.relative_to(root)}: {what}" for what, value in secrets.items()
                          if value.encode() in data]
    for index, text in enumerate(outputs):
        found += [f"output {index}: {what}" for what, value in secrets.items() if value in text]
    return found


def build(root: Path, env: dict[str, str]) -> list[str]:
    result = run_doit(root, "final_image", env=env)
    status = subprocess.run([str(Path(run_doit.__globals__["VENV_BIN"]) / "vaultdoit"), "-C", str(root), "status"],
                            capture_output=True, text=True)
    return [result.stdout, result.stderr, status.stdout, status.stderr]


def private_var_files(work: Path) -> list[dict]:
    """What the fake packer saw of each build: its arguments and its var files."""
    return [json.loads(line) for line in (work / "args.jsonl").read_text().splitlines()]


def test_secrets_reach_packer_in_a_private_file_and_no_output(project_copy, tmp_path: Path):
    """A sensitive variable set in vault.toml, one from PKR_VAR_*, a credential in the environment."""
    root, env, secrets = planted(project_copy, tmp_path, in_settings=False)
    outputs = build(root, env)
    assert (root / "build/final/team.qcow2.cdx.json.sig").is_file()
    assert leaks(root, secrets, *outputs) == []
    # Packer got the values, from a var file only its owner could read, never on its command line.
    calls = private_var_files(tmp_path / "work")
    assert len(calls) == 3
    for call in calls:
        assert not any(value in arg for arg in call["args"] for value in secrets.values())
        [(path, text)] = call["var_files"].items()
        assert call["modes"][path] == "0o600" and not Path(path).exists()  # removed after the build
        assert f'registry_token = "{secrets["vault.toml sensitive"]}"' in text
        assert f'api_key = "{secrets["PKR_VAR_ sensitive"]}"' in text
    # The fake packer printed every value it got; the stage logs show them hidden.
    log = (root / "build/logs/stage-mid.log").read_text()
    assert 'variable registry_token = "<sensitive>"' in log and "variable PKR_VAR_api_key=<sensitive>" in log


def test_sensitive_values_used_in_settings_stay_out_of_every_output(project_copy, tmp_path: Path):
    """Used in a provisioner setting, they are part of the stage's resolved settings (its key):
    as digests only, in the doit database, the build records, `vaultdoit status`."""
    root, env, secrets = planted(project_copy, tmp_path, in_settings=True)
    outputs = build(root, env)
    assert leaks(root, secrets, *outputs) == []
    explain = subprocess.run([str(Path(run_doit.__globals__["VENV_BIN"]) / "vaultdoit"), "-C", str(root),
                              "explain", "stage:mid", "--json"], capture_output=True, text=True)
    assert leaks(root, secrets, explain.stdout, explain.stderr) == []


def test_a_sensitive_variable_given_for_one_run_stays_out_of_its_report(project_copy, tmp_path: Path):
    """`doit final_image var.NAME=VALUE`: the run's record, HTML report and JUnit show the command
    line with the value hidden."""
    root, env, secrets = planted(project_copy, tmp_path, in_settings=False)
    del env["PKR_VAR_api_key"]
    result = run_doit(root, "final_image", f"var.api_key={secrets['PKR_VAR_ sensitive']}", env=env)
    assert leaks(root, secrets, result.stdout, result.stderr) == []
    [record] = (root / "build").rglob("runs/*.json")
    assert json.loads(record.read_text())["command"].endswith("final_image 'var.api_key=<sensitive>'")
    [call] = private_var_files(tmp_path / "work")[-1:]
    assert f'api_key = "{secrets["PKR_VAR_ sensitive"]}"' in next(iter(call["var_files"].values()))


# --- the mechanisms -------------------------------------------------------------------------------------------


def _config(tmp_path: Path, sensitive: frozenset[str] = frozenset({"token"})):
    from vaultdoit.model import PackerConfig

    return PackerConfig(directory=tmp_path, files=(), var_files=(), variables={}, sensitive=sensitive)


def test_what_is_hidden_from_the_logs(tmp_path: Path):
    from vaultdoit import sensitive

    cfg = _config(tmp_path)
    cfg.variables.update(token="s3cret-token", flavour="mid", sizes=[1, 2])
    env = {"PKR_VAR_pw": "hunter22", "PKR_VAR_n": "1", "HOME": "/home/someone"}
    # "1": too short to be a credential, and hiding it would garble every log.
    assert sensitive.values(cfg, env) == ["hunter22", "s3cret-token"]
    assert sensitive.values(_config(tmp_path, frozenset()), {}) == []


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer")
def test_packer_reads_the_private_file_literally(tmp_path: Path):
    """The real Packer reads the private var file's values literally: ${ and %{ are text."""
    from vaultdoit import packer

    secret = 'a${b}c%{d}"e\\f é'
    (tmp_path / "t.pkr.hcl").write_text('''
variable "token" {
  type      = string
  sensitive = true
}
source "null" "x" {
  communicator = "none"
}
build {
  sources = ["source.null.x"]
  provisioner "shell-local" {
    environment_vars = ["TOKEN=${var.token}"]
    inline           = ["printf %s \\"$TOKEN\\" > token.out"]
  }
}
''')
    var_file = packer.write_var_file(tmp_path / "vars/x.pkrvars.hcl", {"token": secret})
    assert var_file is not None and var_file.stat().st_mode & 0o777 == 0o600
    argv = packer.build_argv(_config(tmp_path), "null.x", {}, [var_file])
    assert not any("a$" in arg for arg in argv)
    subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True, env={"CHECKPOINT_DISABLE": "1",
                                                                              "PATH": "/usr/bin:/bin"})
    assert (tmp_path / "token.out").read_text() == secret


def test_secrets_split_between_chunks_never_reach_the_log_or_the_console(tmp_path: Path, capfd):
    import sys

    from vaultdoit import proc

    secret = "token-9f3a-secret"
    # The program prints the secret it is given in pieces, flushed one by one (several chunks).
    script = ("import sys, time\ns = sys.argv[1]\n"
              "for part in ('before ', s[:3], s[3:9], s[9:], ' after ', s, '\\n'):\n"
              "    sys.stdout.write(part); sys.stdout.flush(); time.sleep(0.05)\n")
    log = tmp_path / "log"
    proc.run([sys.executable, "-c", script, secret], logfile=log, echo=True, secrets=[secret])
    text = log.read_text()
    assert secret not in text
    assert text.split("\nbefore ")[0].endswith(" <sensitive>")  # the command line too
    assert "before <sensitive> after <sensitive>" in text, text
    assert secret not in capfd.readouterr().err


def test_secrets_in_redrawn_progress_and_spanning_lines_are_hidden(tmp_path: Path, capfd):
    import sys

    from vaultdoit import proc

    secret = "line-one-secret\nline-two-secret"
    script = ("import sys\nsys.stdout.write('at 10% ' + sys.argv[1].split()[0] + '\\r')\n"
              "sys.stdout.write('at 99%\\r\\n')\nprint(sys.argv[1])\n")
    log = tmp_path / "log"
    proc.run([sys.executable, "-c", script, secret], logfile=log, echo=True, secrets=[secret])
    shown = log.read_text() + capfd.readouterr().err
    assert "line-one-secret" not in shown and "line-two-secret" not in shown, shown
    assert "<sensitive>\n<sensitive>\n" in log.read_text()
