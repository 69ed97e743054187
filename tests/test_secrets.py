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
    """Every file under build/ and cache/ (and the command's output) that holds a secret."""
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


def test_credentials_from_the_environment_stay_out_of_every_output(project_copy, tmp_path: Path):
    """What does not depend on the template reader: PKR_VAR_* values (Packer reads them itself and
    may print them) and other credentials in the environment."""
    root, env, secrets = planted(project_copy, tmp_path, in_settings=False)
    del secrets["vault.toml sensitive"]  # see the tests below
    outputs = build(root, env)
    assert (root / "build/final/team.qcow2.cdx.json.sig").is_file()
    assert leaks(root, secrets, *outputs) == []
    # The fake packer printed every value it got; the stage logs show them hidden.
    assert "variable PKR_VAR_api_key=<sensitive>" in (root / "build/logs/stage-mid.log").read_text()
    assert any(secrets["PKR_VAR_ sensitive"] in line for line in (tmp_path / "work/args.jsonl").read_text()
               .splitlines()) is False  # not passed again by vaultdoit: Packer reads the environment itself


def _reader_lists_sensitive() -> bool:
    """Does the template reader fill PackerConfig.sensitive (the rewrite of the reader)?"""
    import tempfile

    from vaultdoit import hcl

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "v.pkr.hcl").write_text('variable "x" {\n  type = string\n  default = "y"\n  sensitive = true\n}\n')
        try:
            return "x" in hcl.load_packer_dir(Path(tmp), cwd=Path(tmp)).sensitive
        except Exception:
            return False


@pytest.mark.xfail(not _reader_lists_sensitive(), strict=True,
                   reason="needs the template reader to list sensitive variables (PackerConfig.sensitive)")
def test_sensitive_values_reach_packer_in_a_private_file_and_no_log(project_copy, tmp_path: Path):
    root, env, secrets = planted(project_copy, tmp_path, in_settings=False)
    outputs = build(root, env)
    assert leaks(root, secrets, *outputs) == []
    # Packer got the value, from a var file only its owner could read, never on its command line.
    calls = [json.loads(line) for line in (tmp_path / "work/args.jsonl").read_text().splitlines()]
    assert len(calls) == 3
    for call in calls:
        assert not any(secrets["vault.toml sensitive"] in arg for arg in call["argv"])
        private = [(path, f) for path, f in call["var_files"].items() if path.endswith(".private.pkrvars.hcl")]
        assert len(private) == 1
        path, content = private[0]
        assert content["mode"] == "0o600"
        assert f'registry_token = "{secrets["vault.toml sensitive"]}"' in content["text"]
        assert not Path(path).exists()  # removed after the build
    assert 'variable registry_token = "<sensitive>"' in (root / "build/logs/stage-mid.log").read_text()


@pytest.mark.xfail(not _reader_lists_sensitive(), strict=True,
                   reason="needs the template reader to list sensitive variables (PackerConfig.sensitive): "
                          "until then their values stay in clear in the stage settings (doit's database)")
def test_sensitive_values_used_in_settings_stay_out_of_every_output(project_copy, tmp_path: Path):
    root, env, secrets = planted(project_copy, tmp_path, in_settings=True)
    outputs = build(root, env)
    assert leaks(root, secrets, *outputs) == []


# --- the mechanisms, without the template reader ---------------------------------------------------------------


def _config(tmp_path: Path, sensitive: frozenset[str] = frozenset({"token"})):
    from vaultdoit.model import PackerConfig

    return PackerConfig(directory=tmp_path, files=(), var_files=(), variables={}, sensitive=sensitive)


def test_private_variables_go_to_a_file_only_their_owner_reads_for_the_build_only(tmp_path: Path):
    from vaultdoit import packer

    cfg = _config(tmp_path)
    secret = "s3cret ${not.an.interpolation} %{x} \"quoted\" \\ end"
    variables = {"token": secret, "accelerator": "tcg", "from_env": "abc123", "sizes": [1, 2]}
    env = {"PKR_VAR_from_env": "abc123"}
    assert packer.private_names(cfg, variables, env) == {"token", "from_env"}
    private = tmp_path / "state/stage.private.pkrvars.hcl"
    argv = packer.build_argv(cfg, "qemu.x", {k: v for k, v in variables.items() if k != "from_env"}, [], private)
    assert argv[-6:] == [f"-var-file={private}", "-var", "accelerator=tcg", "-var", "sizes=[1, 2]", str(tmp_path)]
    assert not any("s3cret" in arg for arg in argv)
    with packer.private_variables(private, cfg, variables):
        assert private.stat().st_mode & 0o777 == 0o600
        text = private.read_text()
        assert 'token = "s3cret $${not.an.interpolation} %%{x} \\"quoted\\" \\\\ end"' in text
    assert not private.exists()
    with pytest.raises(RuntimeError):
        with packer.private_variables(private, cfg, variables):
            raise RuntimeError("packer failed")
    assert not private.exists()
    assert set(packer.secret_values(cfg, variables, {**env, "PKR_VAR_pw": "hunter22", "PKR_VAR_n": "1"})) == \
        {secret, "abc123", "hunter22"}  # "1": too short to be a credential, and would garble every log


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer")
def test_packer_reads_the_private_file_literally(tmp_path: Path):
    """The real Packer takes the var file's values as -var would have: ${ and %{ are text."""
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
    private = tmp_path / "p.private.pkrvars.hcl"
    cfg = _config(tmp_path)
    argv = packer.build_argv(cfg, "null.x", {"token": secret}, [], private)
    with packer.private_variables(private, cfg, {"token": secret}):
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
