"""vault.toml read through the table of settings: every mistake is one line when the project loads."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from conftest import REPO, run_doit
from vaultdoit import config, config_file, settings
from vaultdoit.config import ProjectConfig, confine
from vaultdoit.config_file import load
from vaultdoit.errors import ConfigError

BOOTSTRAP_FILES = '[bootstrap.base]\npackages = "pkgs.txt"\nconfigure = "conf.sh"\n'


def _bootstrap_files(root: Path, out: Path) -> None:
    (root / "pkgs.txt").write_text("systemd\n")
    (root / "conf.sh").write_text("true\n")


def _link_keys_out(root: Path, out: Path) -> None:
    (root / "keys").symlink_to(out)


def _link_build_out(root: Path, out: Path) -> None:
    (root / "build").symlink_to(out)


def _link_final_out(root: Path, out: Path) -> None:
    (root / "build").mkdir()
    (root / "build/final").symlink_to(out)


def _link_keys_folder_out(root: Path, out: Path) -> None:
    (root / "build").mkdir()
    (root / "build/keys").symlink_to(out)


def _toml_dir(root: Path, out: Path) -> None:
    (root / "vault.toml").unlink()
    (root / "vault.toml").mkdir()


def _lone_key(root: Path, out: Path) -> None:
    (root / "ansible/files/deploy").write_text("PRIVATE KEY\n")


# (vault.toml, the one line expected, a setup step or None, extra environment or None).
# In the message, {toml} is the file's path, {root} the project and {out} a folder outside it.
BAD: dict[str, tuple[str | bytes, str, object, dict[str, str] | None]] = {
    "typo at the top level": (
        'acclerator = "kvm"\n',
        '{toml}:1: unknown setting "acclerator" at the top level (fix: did you mean "accelerator"?)', None, None),
    "typo in [final]": (
        '[final]\ncomprssion = "zlib"\n',
        '{toml}:2: unknown setting "comprssion" in [final] (fix: did you mean "compression"?)', None, None),
    "typo in [verify]": (
        '[verify]\nunit = ["ssh.service"]\n',
        '{toml}:2: unknown setting "unit" in [verify] (fix: did you mean "units"?)', None, None),
    "typo in a profile": (
        'profile = "a"\n[profiles.a]\npacker_dir = "packer"\nimage_nam = "x"\n',
        '{toml}:4: unknown setting "image_nam" in [profiles.a] (fix: did you mean "image_name"?)', None, None),
    "typo in a profile's [final]": (
        'profile = "a"\n[profiles.a]\npacker_dir = "packer"\n[profiles.a.final]\ncompresion = "zlib"\n',
        '{toml}:5: unknown setting "compresion" in [profiles.a.final] (fix: did you mean "compression"?)',
        None, None),
    "typo in [bootstrap.<stage>]": (
        '[bootstrap.base]\npackges = "p.txt"\n',
        '{toml}:2: unknown setting "packges" in [bootstrap.base] (fix: did you mean "packages"?)', None, None),
    "typo in [stages.<stage>]": (
        '[stages.mid]\nstall_timout = 60\n',
        '{toml}:2: unknown setting "stall_timout" in [stages.mid] (fix: did you mean "stall_timeout"?)', None, None),
    "typo as a dotted key": (
        'final.comprssion = "zlib"\n',
        '{toml}:1: unknown setting "comprssion" in [final] (fix: did you mean "compression"?)', None, None),
    "setting in the wrong table": (
        'compression = "zlib"\n',
        '{toml}:1: unknown setting "compression" at the top level (fix: "compression" goes in [final])', None, None),
    "profile inside a profile": (
        'profile = "a"\n[profiles.a]\nprofile = "a"\n',
        '{toml}:3: unknown setting "profile" in [profiles.a] '
        '(fix: "profile" goes at the top level of vault.toml (not in a profile))', None, None),
    "list of numbers for a list of strings": (
        'var_files = [1, 2]\n',
        '{toml}:1: var_files must be a list of strings, not [1, 2] (fix: write e.g. var_files = ["ci.pkrvars.hcl"])',
        None, None),
    "number for a string": (
        'accelerator = 3\n',
        '{toml}:1: accelerator must be a string, not 3 (fix: write e.g. accelerator = "auto")', None, None),
    "accelerator not one of the choices": (
        'accelerator = "gpu"\n',
        '{toml}:1: accelerator must be auto, kvm or tcg, not "gpu" (fix: use accelerator = "auto", "kvm" or "tcg")',
        None, None),
    "unknown compression": (
        '[final]\ncompression = "lz4"\n',
        '{toml}:2: final.compression must be zstd, zlib or none, not "lz4" '
        '(fix: use "zstd" (fast) or "zlib" (readable by QEMU < 5.1))', None, None),
    "apt_proxy neither auto, off nor a URL": (
        'apt_proxy = "squid"\n',
        '{toml}:1: apt_proxy must be auto, off or an http:// or https:// URL, not "squid" '
        '(fix: use apt_proxy = "auto", "off" or "http://HOST:PORT")', None, None),
    "apt_proxy_port out of range": (
        'apt_proxy_port = 80\n',
        '{toml}:1: apt_proxy_port must be between 1024 and 32767, not 80 (fix: use the default 31420)', None, None),
    "boolean for an integer": (
        'apt_proxy_port = true\n',
        '{toml}:1: apt_proxy_port must be an integer, not true (fix: write e.g. apt_proxy_port = 31420)', None, None),
    "coroutines out of range": (
        '[final]\ncoroutines = 0\n',
        '{toml}:2: final.coroutines must be between 1 and 16, not 0 (fix: write e.g. coroutines = 8)', None, None),
    "string for seconds": (
        '[verify]\nboot_timeout = "10m"\n',
        '{toml}:2: verify.boot_timeout must be a number of seconds, not "10m" '
        '(fix: write e.g. boot_timeout = 600)', None, None),
    "stage setting of the wrong type": (
        '[stages.mid]\nstall_timeout = "5m"\n',
        '{toml}:2: stages.mid.stall_timeout must be a number of seconds, not "5m" '
        '(fix: write e.g. stall_timeout = 600)', None, None),
    "negative stall_timeout": (
        'stall_timeout = -1\n',
        '{toml}:1: stall_timeout must be at least 0, not -1 (fix: use 0 (automatic) or a number of seconds)',
        None, None),
    "bad user name": (
        'build_user = "Build User"\n',
        '{toml}:1: build_user must be a user name (lower case letters, digits, _ and -), not "Build User" '
        '(fix: write e.g. build_user = "vault")', None, None),
    "bad disk size": (
        BOOTSTRAP_FILES + 'output = "build/stages/base/base.qcow2"\ndisk_size = "big"\n',
        '{toml}:5: bootstrap.base.disk_size must be a size such as "3G" or "3072M", not "big" '
        '(fix: write e.g. disk_size = "3G")', None, None),
    "a table given a value": (
        'final = "zstd"\n',
        '{toml}:1: final must be a table, not "zstd" (fix: write it as [final] with its settings below)', None, None),
    "a named table given a value": (
        'bootstrap.base = 3\n',
        '{toml}:1: bootstrap.base must be a table, not 3 (fix: write it as [bootstrap.base] with its settings below)',
        None, None),
    "profile name that is a path": (
        'profile = "../x"\n[profiles."../x"]\npacker_dir = "packer"\n',
        '{toml}:2: profile name "../x" is not a plain name '
        '(fix: use letters, digits, ., _ and -, starting with a letter or digit)', None, None),
    "profiles given a value": (
        'profiles = 3\n',
        '{toml}:1: profiles must be a table of tables, not 3 (fix: write each profile as [profiles.<name>])',
        None, None),
    "variable name Packer cannot take": (
        '[variables]\n"my var" = 1\n',
        '{toml}:2: "my var" in [variables] is not a Packer variable name '
        '(fix: use letters, digits, _ and -, starting with a letter)', None, None),
    "variable value Packer cannot take": (
        '[variables]\nwhen = 1979-05-27\n',
        '{toml}:2: variables.when must be a string, number, boolean, list or table, not 1979-05-27 '
        '(fix: write the value as Packer\'s -var takes it, e.g. a quoted string)', None, None),
    "image_name with a path": (
        'image_name = "../../x"\n',
        '{toml}:1: image_name must be a plain file name (no / or ..), not "../../x" '
        '(fix: the image always goes to build/final/; give only its name)', None, None),
    "build_key outside the project": (
        'build_key = "../../id_ed25519"\n',
        '{toml}:1: build_key = "../../id_ed25519" is outside the project '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', None, None),
    "access_key at an absolute path outside": (
        'access_key = "{out}/access"\n',
        '{toml}:1: access_key = "{out}/access" is outside the project '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', None, None),
    "key through a symlink out of the project": (
        'build_key = "keys/build"\n',
        '{toml}:1: build_key = "keys/build" is outside the project: keys is a symlink to {out} '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _link_keys_out, None),
    "build/ a symlink out of the project": (
        '',
        '{toml}: build/ is outside the project: build is a symlink to {out} '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _link_build_out, None),
    "build/final a symlink out of the project": (
        'image_name = "golden"\n',
        '{toml}:1: image_name = "golden" is outside the project: build/final is a symlink to {out} '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _link_final_out, None),
    "default key folder a symlink out of the project": (
        '',
        '{toml}: build_key = "build/keys/build_ed25519" is outside the project: build/keys is a symlink to {out} '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _link_keys_folder_out, None),
    "bootstrap output outside": (
        BOOTSTRAP_FILES + 'output = "{out}/base.qcow2"\n',
        '{toml}:4: bootstrap.base.output = "{out}/base.qcow2" is outside the project '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _bootstrap_files, None),
    "bootstrap kernel outside": (
        BOOTSTRAP_FILES + 'output = "build/base/base.qcow2"\nkernel = "../vmlinuz"\n',
        '{toml}:5: bootstrap.base.kernel = "../vmlinuz" is outside the project '
        '(fix: keep it under the project folder or list its folder in allowed_paths)', _bootstrap_files, None),
    "bootstrap output the project folder itself": (
        BOOTSTRAP_FILES + 'output = "."\n',
        '{toml}:4: bootstrap.base.output = "." is the project folder itself (fix: name a file or folder under it)',
        _bootstrap_files, None),
    "bootstrap without its required keys": (
        '[bootstrap.base]\ntool = "mmdebstrap"\n',
        '{toml}:1: [bootstrap.base] lacks packages, configure, output '
        '(fix: set packages = ..., configure = ..., output = ... (see docs/configuration.md))', None, None),
    "key directly in the project folder": (
        'build_key = "id_build"\n',
        '{toml}:1: build_key = "id_build" would make {root} private '
        '(fix: put the key in a folder of its own, e.g. build/keys/)', None, None),
    "key that exists without its .pub": (
        'access_key = "ansible/files/deploy"\n',
        '{toml}:1: access_key = "ansible/files/deploy" exists without deploy.pub; the keys task would replace it '
        '(fix: name a new file, or put its public key beside it)', _lone_key, None),
    "the same file for both keys": (
        'build_key = "build/keys/k"\naccess_key = "build/keys/k"\n',
        '{toml}:2: access_key must differ from build_key '
        '(fix: the build key is removed from the image; the access key stays)', None, None),
    "input file that does not exist": (
        'ansible_cfg = "ansible/nothing.cfg"\n',
        '{toml}:1: ansible_cfg = "ansible/nothing.cfg" does not exist (fix: create the file or fix the path)',
        None, None),
    "var file that does not exist": (
        'var_files = ["ci.pkrvars.hcl"]\n',
        '{toml}:1: var_files: "ci.pkrvars.hcl" does not exist (fix: create the file or remove it from the list)',
        None, None),
    "packer_dir that does not exist": (
        'packer_dir = "templates"\n',
        '{toml}:1: packer_dir = "templates" does not exist (fix: create the folder or fix the path)', None, None),
    "packer_dir naming a file": (
        'packer_dir = "docs/notes.md"\n',
        '{toml}:1: packer_dir = "docs/notes.md" is not a folder (fix: create the folder or fix the path)',
        None, None),
    "unknown profile": (
        'profile = "mni"\n[profiles.mini]\npacker_dir = "packer"\n',
        '{toml}:1: unknown profile "mni" (fix: did you mean "mini"?)', None, None),
    "unknown profile from the environment": (
        '[profiles.mini]\npacker_dir = "packer"\n',
        '{toml}: unknown profile "gpu" (from VAULTDOIT_PROFILE) (fix: pick one of: mini)', None,
        {"VAULTDOIT_PROFILE": "gpu"}),
    "profiles but none chosen": (
        '[profiles.mini]\npacker_dir = "packer"\n',
        '{toml}:1: [profiles.*] tables but no profile chosen '
        '(fix: set profile = "mini" at the top level or pass profile=NAME)', None, None),
    "relative folder in VAULTDOIT_ALLOWED_PATHS": (
        '',
        "VAULTDOIT_ALLOWED_PATHS: 'shared' is not an absolute path (fix: list absolute folders separated by ':')",
        None, {"VAULTDOIT_ALLOWED_PATHS": "/srv:shared"}),
    "not UTF-8": (
        b'accelerator = "auto"\n# caf\xe9\n',
        '{toml}:2: not UTF-8 text (byte 0xe9 at column 6) (fix: save the file as UTF-8)', None, None),
    "TOML syntax error": (
        '[final\ncompression = "zlib"\n',
        "{toml}:1: invalid TOML: expected ']' at the end of a table declaration (column 7) "
        "(fix: correct the syntax on that line)", None, None),
    "TOML string left open": (
        'accelerator = "auto"\nimage_name = "x\n',
        "{toml}:2: invalid TOML: illegal character '\\n' (column 16) (fix: correct the syntax on that line)",
        None, None),
    "TOML list left open at the end": (
        'accelerator = "auto"\nvar_files = [\n',
        "{toml}:2: invalid TOML: invalid value at the end of the file (fix: correct the syntax on that line)",
        None, None),
    "key written twice": (
        'accelerator = "auto"\naccelerator = "tcg"\n',
        "{toml}:2: invalid TOML: cannot overwrite a value (column 20) (fix: correct the syntax on that line)",
        None, None),
    "vault.toml that cannot be read": (
        '',
        "{toml}: cannot read it: Is a directory "
        "(fix: make it a readable file (or remove it: every setting is optional))", _toml_dir, None),
}


@pytest.fixture
def bad_project(project_copy, tmp_path: Path, monkeypatch):
    """A copy of the team project with the given vault.toml, and a folder outside it."""

    def make(text: str | bytes, setup, env) -> tuple[Path, Path]:
        root = project_copy("team")
        out = tmp_path / "outside"
        out.mkdir()
        data = text.replace(b"{out}", str(out).encode()) if isinstance(text, bytes) \
            else text.replace("{out}", str(out)).encode()
        (root / "vault.toml").write_bytes(data)
        if setup is not None:
            setup(root, out)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        return root, out

    return make


@pytest.mark.parametrize("case", list(BAD))
def test_bad_vault_toml_is_one_line_at_load(case: str, bad_project):
    text, expected, setup, env = BAD[case]
    root, out = bad_project(text, setup, env)
    expected = expected.format(toml=root / "vault.toml", root=root, out=out)
    with pytest.raises(ConfigError) as info:
        load(root)
    assert str(info.value) == expected
    # The same line, exit 2 and no traceback through plain doit.
    result = run_doit(root, "list", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"vaultdoit: error: {expected}"]
    assert "Traceback" not in result.stdout + result.stderr


def test_there_are_enough_bad_inputs():
    assert len(BAD) >= 25


def test_vaultdoit_command_exits_2_on_a_bad_vault_toml(bad_project):
    root, _ = bad_project('[final]\ncomprssion = "zlib"\n', None, None)
    result = subprocess.run([str(Path(sys.executable).parent / "vaultdoit"), "-C", str(root), "status"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (f'vaultdoit: error: {root}/vault.toml:2: unknown setting "comprssion" in '
                                     '[final] (fix: did you mean "compression"?)')


# --- what loads ------------------------------------------------------------------------------------------------


def test_allowed_paths_let_outputs_live_outside(bad_project, tmp_path: Path, monkeypatch):
    root, out = bad_project('allowed_paths = ["{out}"]\nbuild_key = "{out}/keys/build"\n', None, None)
    cfg = load(root)
    assert cfg.build_key == out / "keys/build"
    assert cfg.allowed_paths == (out.resolve(),)
    # The same through the environment, for a project without a vault.toml.
    (root / "vault.toml").write_text(f'access_key = "{out}/keys/access"\n')
    with pytest.raises(ConfigError):
        load(root)
    monkeypatch.setenv(settings.ALLOWED_PATHS_ENV, f"/nonexistent:{out}")
    assert load(root).access_key == out / "keys/access"


def test_symlinked_build_folder_loads_when_its_target_is_allowed(bad_project):
    root, out = bad_project('allowed_paths = ["{out}"]\n', _link_build_out, None)
    assert load(root).final_image == root / "build/final/team.qcow2"


def test_a_symlink_that_stays_inside_is_inside(bad_project):
    root, _ = bad_project('build_key = "k/build"\n', None, None)
    (root / "k").symlink_to(root / "build", target_is_directory=True)
    assert load(root).build_key == root / "k/build"


def test_a_profile_overrides_key_by_key_inside_tables_too(bad_project):
    root, _ = bad_project(
        'profile = "a"\naccelerator = "tcg"\nstall_timeout = 30\n'
        '[final]\ncompression = "zlib"\ncoroutines = 4\n'
        '[variables]\nmemory = 2048\ncpus = 2\n'
        '[stages.mid]\nstall_timeout = 600\n'
        '[profiles.a]\npacker_dir = "packer"\nimage_name = "alpha"\n'
        '[profiles.a.final]\ncoroutines = 2\n'
        '[profiles.a.variables]\ncpus = 4\n'
        '[profiles.b]\npacker_dir = "packer"\n', None, None)
    cfg = load(root)
    assert (cfg.profile, cfg.image_name, cfg.accelerator) == ("a", "alpha", "tcg")
    assert (cfg.final.compression, cfg.final.coroutines) == ("zlib", 2)
    assert cfg.variables == {"memory": 2048, "cpus": 4}
    assert cfg.stage_config("mid").stall_timeout == 600.0
    assert cfg.stage_config("top").stall_timeout == 30.0
    assert load(root, "b").image_name == "vault-b"


def test_every_profile_is_checked_not_only_the_chosen_one(bad_project):
    root, _ = bad_project('profile = "a"\n[profiles.a]\npacker_dir = "packer"\n'
                          '[profiles.b]\npacker_dir = "packer"\naccelerator = "gpu"\n', None, None)
    with pytest.raises(ConfigError, match='profiles.b.accelerator must be auto, kvm or tcg, not "gpu"'):
        load(root)


def test_unknown_stage_tables_are_refused_by_name(bad_project):
    root, _ = bad_project('[stages.mdi]\nstall_timeout = 60\n', None, None)
    cfg = load(root)  # stage names are known only to the planner, which calls check_stage_names
    with pytest.raises(ConfigError) as info:
        config_file.check_stage_names(cfg, ["base", "mid", "top"])
    assert str(info.value) == f'{root}/vault.toml:1: [stages.mdi] names no stage (fix: did you mean "mid"?)'
    config_file.check_stage_names(cfg, ["mdi"])


def test_verify_key_is_an_input_read_from_anywhere(bad_project):
    root, out = bad_project('[verify]\nkey = "{out}/id"\n', None, None)
    with pytest.raises(ConfigError, match=r'verify.key = ".*/id" does not exist'):
        load(root)
    (out / "id").write_text("key\n")
    assert load(root).verify.key == out / "id"
    (root / "vault.toml").write_text('[verify]\nkey = "build/keys/access_ed25519"\n')  # made by the keys task
    assert load(root).verify.key == root / "build/keys/access_ed25519"


def test_the_repository_settings_load_unchanged():
    cfg = load(REPO)
    assert (cfg.profile, cfg.image_name, cfg.final.compression) == ("mini", "vault-mini", "zstd")
    assert cfg.bootstraps[0].kernel == REPO / "build/mini/stages/base/vmlinuz"
    assert cfg.verify.units == ("vault-monitor.service",)
    assert (cfg.stall_timeout, cfg.allowed_paths, cfg.stage_configs) == (0.0, (), ())


# --- confine() -------------------------------------------------------------------------------------------------


def test_confine(tmp_path: Path):
    root = tmp_path / "project"
    (root / "build").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    assert confine(Path("build/x"), root) == root / "build/x"
    assert confine(root / "a/../build/y", root) == root / "build/y"
    assert confine(other / "z", root, [other], "output_directory") == other / "z"
    with pytest.raises(ConfigError) as info:
        confine(Path("../other/z"), root, [], "output_directory", value="../other/z", file="packer/a.pkr.hcl:3")
    assert str(info.value) == ('packer/a.pkr.hcl:3: output_directory = "../other/z" is outside the project '
                               '(fix: keep it under the project folder or list its folder in allowed_paths)')
    (root / "out").symlink_to(other)
    with pytest.raises(ConfigError, match=f"out is a symlink to {other}"):
        confine(Path("out/stage"), root, [], "output_directory", file=None)
    for itself in (Path("."), Path("build/..")):
        with pytest.raises(ConfigError, match="is the project folder itself"):
            confine(itself, root)
    with pytest.raises(ConfigError, match="is an allowed folder itself"):
        confine(other, root, [other])


# --- the table drives the docs ---------------------------------------------------------------------------------


def test_docs_are_the_rendering_of_the_table():
    committed = (REPO / "docs/configuration.md").read_text()
    assert committed == settings.markdown(), "run: python -m vaultdoit.settings --markdown > docs/configuration.md"
    result = subprocess.run([sys.executable, "-m", "vaultdoit.settings", "--markdown"], capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout == committed


def test_every_setting_is_documented_with_help_and_an_example():
    doc = settings.markdown()
    for s in settings.SETTINGS:
        assert s.help and (f"`{s.name}`" in doc or f"[{s.name}" in doc), s.name
        # A wrong type is answered with a valid line: from the example, else the default.
        assert "null" not in config_file._example(s) and "None" not in config_file._example(s), s.name


def test_table_defaults_are_the_dataclass_defaults():
    defaults = {f.name: f.default for f in fields(ProjectConfig)}
    for s in settings.SETTINGS:
        if s.scope == settings.PROJECT and s.kind.shape == "value" and s.default is not None \
                and s.name in defaults and s.path is None:
            # A size is written as text ("256M") and held in bytes.
            expected = settings.size_bytes(s.default) if s.check is settings.CHUNK else s.default
            assert defaults[s.name] == expected, s.name
    for cls, scope in ((config.FinalConfig, settings.FINAL), (config.VerifyConfig, settings.VERIFY)):
        for f in fields(cls):
            entry = settings.SCOPE_KEYS[scope][f.name]
            assert f.default == entry.default, f.name


def test_no_vault_toml_gives_the_defaults(project_copy):
    root = project_copy("team")
    cfg = load(root)
    assert cfg.image_name == "team" and cfg.profile is None
    assert cfg.build_key == root / "build/keys/build_ed25519"
    assert cfg.stage_config("mid").stall_timeout == 0.0
