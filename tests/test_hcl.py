"""Reading Packer template folders: variables, locals, functions, per-build overrides, errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from vaultdoit.errors import TemplateError
from vaultdoit.hcl import load_packer_dir
from vaultdoit.model import PackerConfig, PackerSource, Unknown

HCL = (FIXTURES / "hcl").resolve()
CWD = Path("/proj")
UNSET = "set it in vault.toml [variables], a var file, PKR_VAR_{} or on the command line"


def load(name: str, **kwargs: Any) -> PackerConfig:
    kwargs.setdefault("env", {})
    return load_packer_dir(HCL / name, cwd=CWD, **kwargs)


def by_name(config: PackerConfig) -> dict[str, PackerSource]:
    return {source.name: source for source in config.sources}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load_error(folder: Path, **kwargs: Any) -> TemplateError:
    kwargs.setdefault("env", {})
    with pytest.raises(TemplateError) as info:
        load_packer_dir(folder, cwd=CWD, **kwargs)
    return info.value


def at(path: Path, line: int) -> str:
    return f"{path}:{line}"


# --------------------------------------------------------------------------- chain: three stages


def test_chain_files_var_files_and_variables() -> None:
    config = load("chain")
    chain = HCL / "chain"
    assert config.directory == chain
    assert config.files == tuple(chain / n for n in (
        "drivers.pkr.hcl", "final.pkr.hcl", "frameworks.pkr.hcl", "plugins.pkr.hcl", "variables.pkr.hcl"))
    assert config.var_files == (chain / "chain.auto.pkrvars.hcl",)  # ci.pkrvars.hcl is not automatic
    assert config.variables == {
        "accelerator": "kvm",
        "base_dir": "build/base",
        "build_dir": "build/stages",
        "debian_release": "bookworm",
        "flavour": "auto",  # from chain.auto.pkrvars.hcl
        "frameworks": ["django", "flask"],
        "memory": 2048,  # from chain.auto.pkrvars.hcl
        "ssh_password": "packer",
    }
    assert config.assigned == {"flavour", "memory"}
    assert config.sensitive == {"ssh_password"}


def test_chain_builds_only_the_sources_some_build_builds() -> None:
    config = load("chain")
    # "scratch" is defined but never built, so its unresolvable iso_url is no error.
    assert [s.name for s in config.sources] == ["drivers", "final", "frameworks"]
    assert [s.only for s in config.sources] == ["drivers.qemu.drivers", "qemu.final", "qemu.frameworks"]
    frameworks = by_name(config)["frameworks"]
    assert frameworks.file == HCL / "chain" / "frameworks.pkr.hcl"
    assert frameworks.where == at(HCL / "chain" / "frameworks.pkr.hcl", 1)


def test_chain_frameworks_stage() -> None:
    source = by_name(load("chain"))["frameworks"]
    assert source.build_name is None
    assert source.attrs == {
        "disk_image": True,
        "use_backing_file": True,
        "iso_url": "build/stages/drivers/drivers.qcow2",
        "iso_checksum": "none",
        "format": "qcow2",
        "output_directory": "build/stages/frameworks",
        "vm_name": "frameworks.qcow2",
        "accelerator": "kvm",
        "memory": 2048,
        "qemuargs": [
            ["-kernel", "build/base/vmlinuz"],
            ["-initrd", "build/base/initrd.img"],
            ["-append", "root=/dev/vda1 console=ttyS0 quiet"],  # a local using a later local
            ["-smp", "2"],  # numbers become strings, as Packer's [][]string
        ],
        "communicator": "ssh",
        "ssh_username": "root",
        "ssh_password": "packer",
        "shutdown_command": "poweroff",
    }
    shell, ansible = source.provisioners
    frameworks = HCL / "chain" / "frameworks.pkr.hcl"
    assert (shell.type, shell.playbook_file, shell.where) == ("shell", None, at(frameworks, 26))
    assert shell.settings == {"inline": ["apt-get update"]}
    assert (ansible.type, ansible.playbook_file, ansible.extra_arguments) == (
        "ansible",
        Path("/proj/ansible/frameworks.yml"),
        ("--extra-vars", "frameworks=django,flask", "--extra-vars", "flavour=auto", "-v"),
    )
    assert ansible.settings == {"use_proxy": False, "ansible_env_vars": ["ANSIBLE_NOCOLOR=1"]}
    assert source.attr_vars == {"accelerator": "accelerator", "memory": "memory", "ssh_password": "ssh_password"}
    assert source.reads == frozenset()


def test_chain_drivers_and_final_stages() -> None:
    sources = by_name(load("chain"))
    drivers, final = sources["drivers"], sources["final"]
    assert drivers.build_name == "drivers"
    assert drivers.attrs["iso_url"] == "build/base/base.qcow2"
    assert drivers.attrs["disk_size"] == "8G"
    assert drivers.attrs["qemuargs"][0] == ["-kernel", "build/base/vmlinuz"]
    (prov,) = drivers.provisioners
    assert prov.extra_arguments == ("--extra-vars", "release=bookworm")
    assert prov.settings == {"use_proxy": False, "user": "root"}

    assert final.attrs["vm_name"] == "final-bookworm-auto.qcow2"
    assert final.attrs["use_backing_file"] is False
    (local,) = final.provisioners
    assert local.type == "ansible-local"
    assert local.playbook_file == HCL / "ansible" / "final.yml"  # ${path.root}/.. normalised
    assert local.extra_arguments == ("--tags", "final")


def test_chain_explicit_var_file_then_overrides() -> None:
    chain = HCL / "chain"
    config = load("chain", var_files=[chain / "ci.pkrvars.hcl"])
    assert config.var_files == (chain / "chain.auto.pkrvars.hcl", chain / "ci.pkrvars.hcl")
    assert config.variables["build_dir"] == "out"  # the explicit file beats the default
    assert config.variables["flavour"] == "ci"  # ... and the auto file
    frameworks = by_name(config)["frameworks"]
    assert frameworks.attrs["iso_url"] == "out/drivers/drivers.qcow2"
    assert frameworks.attrs["output_directory"] == "out/frameworks"

    config = load("chain", var_files=[chain / "ci.pkrvars.hcl"],
                  overrides={"flavour": "cli", "memory": "4096", "not_declared": "ignored"})
    assert config.variables["flavour"] == "cli"  # -var beats every file
    assert config.variables["memory"] == 4096  # a string for a number variable is converted, as -var does
    assert "not_declared" not in config.variables
    assert by_name(config)["final"].attrs["vm_name"] == "final-bookworm-cli.qcow2"

    # A string for a list variable is HCL text, as with -var.
    config = load("chain", overrides={"frameworks": '["fastapi", "flask"]'})
    assert config.variables["frameworks"] == ["fastapi", "flask"]
    assert "frameworks=fastapi,flask" in by_name(config)["frameworks"].provisioners[1].extra_arguments


def test_relative_paths_are_relative_to_cwd() -> None:
    config = load_packer_dir(Path("chain"), cwd=HCL, var_files=[Path("chain/ci.pkrvars.hcl")], env={})
    assert config.directory == HCL / "chain"
    assert config.var_files[-1] == HCL / "chain" / "ci.pkrvars.hcl"
    drivers = by_name(config)["drivers"]
    assert drivers.provisioners[0].playbook_file == HCL / "ansible" / "drivers.yml"
    assert drivers.attrs["output_directory"] == "out/drivers"  # kept relative, as Packer sees it


# --------------------------------------------------------------------------- builds and source references


def test_build_sources_list_and_source_block_are_two_builds() -> None:
    base, custom = load("overrides").sources
    assert (base.name, base.only) == ("base", "variants.qemu.base")
    assert (custom.name, custom.only) == ("custom", "variants.qemu.custom")
    assert base.attrs == {
        "disk_image": True,
        "iso_url": "images/upstream.qcow2",
        "iso_checksum": "none",
        "output_directory": "build/base",
        "vm_name": "packer-base",  # Packer's default
        "memory": 2048,
    }
    assert custom.attrs == {
        "disk_image": True,
        "iso_url": "build/demo/base.qcow2",  # format() with a local, overriding the source
        "iso_checksum": "none",
        "output_directory": "out/custom",  # ${source.name} is the new name
        "vm_name": "packer-custom",
        "memory": 2048,
        "cpus": 2,
    }
    assert custom.file == HCL / "overrides" / "build.pkr.hcl"


def test_provisioners_follow_source_name_only_and_except() -> None:
    base, custom = load("overrides").sources
    assert [(p.type, p.playbook_file, p.extra_arguments) for p in base.provisioners] == [
        ("ansible", Path("/proj/ansible/base.yml"), ("-e", "name=base")),
        ("shell", None, ()),
    ]
    assert base.provisioners[1].settings == {"inline": ["echo not for custom"]}  # only/except are no settings
    assert [(p.type, p.playbook_file, p.extra_arguments) for p in custom.provisioners] == [
        ("ansible", Path("/proj/ansible/custom.yml"), ("-e", "name=custom")),
        ("shell", None, ()),
    ]
    assert custom.provisioners[1].settings == {"inline": ["echo only for custom"]}


def test_overrides_beat_defaults_through_locals() -> None:
    _base, custom = load("overrides", overrides={"flavour": "prod"}).sources
    assert custom.attrs["iso_url"] == "build/prod/base.qcow2"


def test_outputs_default_to_packer_defaults(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", 'source "qemu" "x" {\n  iso_url = "a.qcow2"\n  vm_name = null\n}\n'
          'build {\n  source "source.qemu.x" {\n    name = "y"\n  }\n}\n')
    (source,) = load_packer_dir(tmp_path, cwd=CWD, env={}).sources
    assert source.name == "y"
    assert source.attrs == {"iso_url": "a.qcow2", "output_directory": "output-y", "vm_name": "packer-y"}


def graph(config: PackerConfig) -> list[tuple[Any, ...]]:
    """What a stage graph is made of: names, selectors, attributes, provisioners."""
    return [(s.name, s.only, s.attrs, [(p.type, p.settings) for p in s.provisioners]) for s in config.sources]


@pytest.mark.parametrize("build", [
    # The forms Packer accepts besides `sources = ["source.qemu.x"]` and `source "source.qemu.x" {}`.
    'build {\n  sources = ["qemu.other"]\n  source "qemu.a" {\n    name = "b"\n    vm_name = "b.qcow2"\n  }\n',
    'build {\n  sources = ["sources.qemu.other"]\n  source "sources.qemu.a" {\n    name = "b"\n'
    '    vm_name = "b.qcow2"\n  }\n',
    'build {\n  sources = [source.qemu.other]\n  source "source.qemu.a" {\n    name = "b"\n    vm_name = "b.qcow2"\n  }\n',
])
def test_source_reference_forms_give_the_plain_graph(tmp_path: Path, build: str) -> None:
    plain = load("refs")
    folder = tmp_path / "refs"
    shutil.copytree(HCL / "refs", folder)
    text = (folder / "build.pkr.hcl").read_text()
    rest = text[text.index("  provisioner"):]
    write(folder, "build.pkr.hcl", build + "\n" + rest)
    assert graph(load_packer_dir(folder, cwd=CWD, env={})) == graph(plain)
    assert graph(plain) == [
        ("other", "qemu.other",
         {"iso_url": "images/other.qcow2", "output_directory": "output-other", "vm_name": "packer-other"}, []),
        ("b", "qemu.b",
         {"disk_image": True, "iso_url": "images/base.qcow2", "iso_checksum": "none", "output_directory": "build/b",
          "vm_name": "b.qcow2"},
         [("shell", {"inline": ["echo b"]})]),
    ]


# --------------------------------------------------------------------------- variables


def test_null_default_is_a_value_and_null_comparisons_work() -> None:
    config = load("null_default")
    assert config.variables == {"suffix": None, "vm_name": None}
    (source,) = config.sources
    # null means "not set": Packer's default output_directory applies.
    assert source.attrs == {"iso_url": "base.qcow2", "vm_name": "a.qcow2", "output_directory": "output-a",
                            "boot_wait": "2s"}
    (source,) = load("null_default", overrides={"vm_name": "given.qcow2", "suffix": "out"}).sources
    assert (source.attrs["vm_name"], source.attrs["output_directory"]) == ("given.qcow2", "out")


def test_variable_priority_lowest_first() -> None:
    precedence = HCL / "precedence"
    config = load("precedence", var_files=[precedence / "explicit.pkrvars.hcl"],
                  defaults={"from_toml": "toml", "from_file": "toml", "from_env": "toml", "from_cli": "toml"},
                  env={"PKR_VAR_from_env": "env", "PKR_VAR_from_cli": "env", "PKR_VAR_undeclared": "x",
                       "HOME": "/root"},
                  overrides={"from_cli": "cli"})
    assert config.variables == {
        "from_default": "default", "from_auto": "auto", "from_toml": "toml", "from_file": "file",
        "from_env": "env", "from_cli": "cli", "password": "default", "sizes": [1],
    }
    (source,) = config.sources
    assert source.attrs["iso_url"] == "default/auto/toml/file/env/cli.qcow2"
    # Exactly the variables whose value is not the template's default: the runner passes these on.
    assert config.assigned == {"from_auto", "from_toml", "from_file", "from_env", "from_cli"}
    assert config.sensitive == {"password"}


def test_pkr_var_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKR_VAR_from_default", "from the environment")
    monkeypatch.setenv("PKR_VAR_sizes", "[2, 3]")  # HCL text for a list, as Packer reads it
    config = load_packer_dir(HCL / "precedence", cwd=CWD)  # env defaults to os.environ
    assert config.variables["from_default"] == "from the environment"
    assert config.variables["sizes"] == [2, 3]
    assert config.sources[0].attrs["cd_label"] == "2,3"
    assert {"from_default", "sizes"} <= config.assigned


def test_vault_toml_values_keep_their_types() -> None:
    config = load("precedence", defaults={"sizes": [4, "5"], "password": "s3cret"})
    assert config.variables["sizes"] == [4, 5]  # converted to list(number)
    assert config.variables["password"] == "s3cret"
    assert "password" in config.assigned


def test_variables_block_local_block_and_types(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", """
variables {
  size = 10
}
variable "name" {
  type    = string
  default = 5
}
variable "on" {
  type    = bool
  default = "true"
}
variable "ports" {
  type    = set(number)
  default = ["22", 22, 80]
}
variable "opts" {
  type    = object({ name = string, size = optional(number) })
  default = { name = "x", extra = true }
}
local "img" {
  expression = "${var.name}-${var.size * 2}.qcow2"
  sensitive  = true
}
source "qemu" "x" {
  iso_url          = "a.qcow2"
  vm_name          = local.img
  use_backing_file = var.on
  disk_size        = "${var.size}G"
}
build {
  sources = ["source.qemu.x"]
}
""")
    config = load_packer_dir(tmp_path, cwd=CWD, env={})
    assert config.variables == {"size": 10, "name": "5", "on": True, "ports": [22, 80],
                                "opts": {"name": "x", "size": None}}
    attrs = config.sources[0].attrs
    assert (attrs["vm_name"], attrs["use_backing_file"], attrs["disk_size"]) == ("5-20.qcow2", True, "10G")


def test_env_in_variable_defaults_reads_the_given_environment(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", 'variable "dir" {\n  default = env("STAGE_DIR")\n}\n'
          'source "qemu" "x" {\n  iso_url = "${var.dir}/a.qcow2"\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n')
    config = load_packer_dir(tmp_path, cwd=CWD, env={"STAGE_DIR": "/images"})
    assert config.sources[0].attrs["iso_url"] == "/images/a.qcow2"
    assert config.assigned == frozenset()  # a default, even one read from the environment


def test_lone_variables_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", """
variable "iso_url" { default = "a.iso" }
variable "iso_checksum" { default = "none" }
source "qemu" "x" {
  iso_url      = var.iso_url
  iso_checksum = "${var.iso_checksum}"
  vm_name      = "${var.iso_url}.qcow2"
}
build {
  sources = ["source.qemu.x"]
}
""")
    (source,) = load_packer_dir(tmp_path, cwd=CWD, env={}).sources
    assert source.attr_vars == {"iso_url": "iso_url", "iso_checksum": "iso_checksum"}


def test_unset_variable_is_an_error_only_where_the_graph_needs_it(tmp_path: Path) -> None:
    path = write(tmp_path, "t.pkr.hcl", """
variable "apt_proxy" { type = string }
variable "dir" { type = string }
source "qemu" "x" {
  iso_url       = "${var.dir}/a.qcow2"
  http_proxy    = var.apt_proxy
}
build {
  sources = ["source.qemu.x"]
}
""")
    error = load_error(tmp_path)
    assert (error.file, error.message, error.hint) == (
        at(path, 5), 'source "qemu" "x": iso_url: variable "dir" has no value', UNSET.format("dir"))
    assert str(error) == (f'{path}:5: source "qemu" "x": iso_url: variable "dir" has no value '
                          '(fix: set it in vault.toml [variables], a var file, PKR_VAR_dir or on the command line)')
    config = load_packer_dir(tmp_path, cwd=CWD, overrides={"dir": "d"}, env={})
    assert config.variables == {"apt_proxy": None, "dir": "d"}
    # Not a graph attribute: an Unknown that says why, never the raw text kept silently.
    assert config.sources[0].attrs["http_proxy"] == Unknown(
        text="var.apt_proxy", where=at(path, 6), reason='variable "apt_proxy" has no value')


# --------------------------------------------------------------------------- values the graph does not need


def test_functions_paths_and_nested_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    config = load("functions", env={"VAULTDOIT_TEST_HOME": "/home/x"})
    (source,) = config.sources
    root = HCL / "functions"
    assert config.variables["home"] == "/home/x"  # env() in a variable default
    assert source.attrs == {
        "iso_url": str(HCL / "p.qcow2"),  # ${abspath("${path.root}/../p.qcow2")}
        "output_directory": "build/stages/functions",
        "vm_name": "f.qcow2",
        "disk_size": "3G",
        "format": "qcow2",
        "qemuargs": [["-kernel", f"{root.parent}/vmlinuz"], ["-append", "x=A"]],
        "boot_command": [Unknown(text='"<enter>${data.unknown.value}"', where=at(root / "f.pkr.hcl", 36),
                                 reason='data source "unknown" is read when Packer runs', prefix="<enter>")],
        "shutdown_command": "sudo shutdown -P now\n",
        "cd_content": {"meta-data": "instance-id: stages\n  local-hostname: f\n"},
        "cpus": "4",
        "display": 'true-2.5-002.2 "q"',
        "net_device": "virtio-net",
        "machine_type": "pc-q35",
        "http_directory": "http",
        "floppy_files": ["a", "b", "c", "d"],
        "floppy_label": "20G",
        "cd_label": "2G",
        "ssh_private_key_file": "/home/me/.ssh/id_ed25519",
        "boot_wait": "3s",
        "vnc_bind_address": "${not_an_interpolation}",
    }
    ansible, shell, local = source.provisioners
    assert (ansible.type, ansible.playbook_file, ansible.extra_arguments) == ("ansible", Path("/proj/ansible/f.yml"), ())
    assert shell.type == "shell" and shell.playbook_file is None
    assert shell.settings == {"inline": ["echo /home/x"]}
    assert local.playbook_file == HCL / "p.yml"
    assert local.extra_arguments == ("--limit", "functions", "3", "true")


def test_unknown_values_say_why_where_and_what_is_known() -> None:
    config = load("unknowns")
    assert config.variables == {"mirror": None, "token": None}
    assert config.sensitive == {"token"}
    (source,) = config.sources
    u = HCL / "unknowns" / "u.pkr.hcl"
    attrs = source.attrs
    assert attrs["boot_command"] == [
        "<enter>",  # known elements stay values
        Unknown('"url=${data.http.release.body}<enter>"', at(u, 23), 'data source "http" is read when Packer runs',
                prefix="url="),
        Unknown('"token=${var.token}"', at(u, 23),
                'the default of variable "token": vault() is read when Packer runs', prefix="token="),
    ]
    # The literal text before the unknown part, through a local: a path widens to that folder.
    assert attrs["http_directory"] == Unknown("local.http_dir", at(u, 22), 'variable "mirror" has no value',
                                              prefix=f"{HCL / 'unknowns'}/http/")
    assert attrs["cd_label"] == Unknown("upper(var.mirror)", at(u, 24), 'variable "mirror" has no value')
    assert attrs["floppy_label"].reason == "packer.version is only known while Packer runs"
    assert attrs["http_content"]["/a"] == "fixed"
    assert attrs["http_content"]["/b"].reason == 'variable "mirror" has no value'
    assert attrs["ssh_password"].reason == "aws_secretsmanager() is read when Packer runs"
    assert attrs["vnc_password"].reason == "function unknownfunction() is not supported by vaultdoit"
    # The template file is read even though its variables are not known: editing it changes the key.
    assert source.reads == {HCL / "unknowns" / "boot.pkrtpl"}


def test_file_functions_read_for_real_and_record_every_file() -> None:
    config = load("files")
    a, b = config.sources
    files = HCL / "files"
    assert a.attrs["cd_content"] == {
        "user-data": "#cloud-config\nusers:\n  - name: vault\n    ssh_authorized_keys:\n"
                     "      - ssh-ed25519 AAAA one\n      - ssh-ed25519 BBBB two\n",
        "meta-data": "instance-id: 0e90e1aa36481e399939d32680dab2005c299f2bb9c3ba6b151ac0cc821fec7a",
    }
    assert a.attrs["http_content"] == {"/motd": "Welcome\n"}
    assert (a.attrs["floppy_label"], a.attrs["cd_label"]) == ("none", "present")
    (shell,) = a.provisioners
    assert shell.settings == {"scripts": [f"{files}/scripts/more/more.sh", f"{files}/scripts/setup.sh"]}
    # Reads made inside locals count for every source that uses them; fileset() counts what it lists.
    # What try() and fileexists() found is a value in the settings: a missing file is no input.
    assert a.reads == {files / p for p in (
        "boot/user-data.pkrtpl", "site/user.yml", "site/motd.txt", "scripts/setup.sh", "scripts/more/more.sh")}
    assert b.attrs["boot_command"] == ["iVBORwAB/w==", "7b48666b13c02ffd7122df4275adc002"]
    assert b.reads == {files / "site/logo.bin", files / "site/extra.txt"}  # site/extra.txt named by a default


def test_a_missing_file_is_an_input_of_the_stage_not_a_load_error(tmp_path: Path) -> None:
    """A file function's file that is not there yet (a key the build makes): the setting is
    unknown and names why, the file is read (an input the stage's build checks)."""
    write(tmp_path, "t.pkr.hcl", 'locals {\n  data = file("nope.txt")\n}\n'
          'source "qemu" "x" {\n  iso_url = "a.qcow2"\n  boot_command = [local.data]\n}\n'
          'build {\n  sources = ["source.qemu.x"]\n}\n')
    (source,) = load_packer_dir(tmp_path, cwd=CWD, env={}).sources
    (value,) = source.attrs["boot_command"]
    assert isinstance(value, Unknown) and value.reason == f"{tmp_path}/nope.txt does not exist yet"
    assert source.reads == frozenset({tmp_path / "nope.txt"})


def test_a_missing_file_in_a_graph_setting_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.pkr.hcl", 'locals {\n  name = file("nope.txt")\n}\n'
                 'source "qemu" "x" {\n  iso_url = "a.qcow2"\n  vm_name = local.name\n}\n'
                 'build {\n  sources = ["source.qemu.x"]\n}\n')
    error = load_error(tmp_path)
    assert error.file == at(path, 2)  # the call, inside the local
    assert error.message.startswith('source "qemu" "x": ') and f"no file exists at {tmp_path}/nope.txt" in error.message
    assert "\n" not in str(error)


def test_volatile_functions_are_fixed_in_settings() -> None:
    (source,) = load("volatile").sources
    assert source.attrs["boot_command"] == ["build 19700101-0000", "00000000-0000-4000-8000-000000000000"]
    assert source.attrs["cd_label"] == "19700101000000"
    assert source.attrs["ssh_password"].startswith("$2a$10$")
    assert load("volatile").sources[0].attrs == source.attrs  # the same on every run


@pytest.mark.parametrize(("attribute", "value", "used"), [
    ("vm_name", '"a-${timestamp()}.qcow2"', "timestamp()"),
    ("output_directory", '"build/${local.stamp}"', "timestamp()"),  # through a local
    ("iso_url", '"${uuidv4()}.qcow2"', "uuidv4()"),
])
def test_volatile_functions_in_paths_are_refused(tmp_path: Path, attribute: str, value: str, used: str) -> None:
    base = "format = \"qcow2\"" if attribute == "iso_url" else "iso_url = \"a.qcow2\""
    path = write(tmp_path, "t.pkr.hcl", f'locals {{\n  stamp = formatdate("YYYY", timestamp())\n}}\n'
                 f'source "qemu" "x" {{\n  {base}\n  {attribute} = {value}\n}}\n'
                 'build {\n  sources = ["source.qemu.x"]\n}\n')
    error = load_error(tmp_path)
    assert error.file == at(path, 6)
    assert error.message == f'source "qemu" "x": {attribute} uses {used}, which changes on every run'
    assert error.hint == "a build cache needs a stable path: use a fixed name or a variable"


# --------------------------------------------------------------------------- provisioners


def test_provisioners_of_every_type_are_resolved() -> None:
    (source,) = load("provisioners").sources  # the null source is no stage
    p = HCL / "provisioners" / "p.pkr.hcl"
    assert source.only == "all.qemu.a"
    assert [(x.type, x.where) for x in source.provisioners] == [
        ("shell", at(p, 18)), ("shell", at(p, 24)), ("file", at(p, 29)), ("file", at(p, 35)), ("file", at(p, 40)),
        ("shell-local", at(p, 45)), ("ansible", at(p, 49)), ("ansible-local", at(p, 59)),
    ]  # the last two shells run only for (or not for) other sources
    shell1, shell2, upload, uploads, content, local, ansible, ansible_local = source.provisioners
    assert shell1.settings == {"script": "scripts/one.sh", "environment_vars": ["STAGE=a", "MODE=build"],
                               "pause_before": "1s"}
    assert shell2.settings == {"scripts": ["scripts/a.sh", "scripts/b.sh"], "inline": ["echo QEMU"]}
    assert upload.settings == {"source": "files/", "destination": "/tmp/files", "direction": "upload"}
    assert uploads.settings == {"sources": ["a.txt", "b.txt"], "destination": "/tmp/"}
    assert content.settings == {"content": Unknown('"built by ${build.name}"', at(p, 41),
                                                   "build.name is only known while Packer runs", prefix="built by "),
                                "destination": "/etc/built-by"}
    assert local.settings == {"inline": ["echo local"]}
    assert ansible.playbook_file == Path("/proj/ansible/site.yml")
    assert ansible.extra_arguments == ("--extra-vars", "@ansible/vars.yml", "-e", "n=a")
    assert ansible.settings == {
        "galaxy_file": "ansible/requirements.yml", "roles_path": "ansible/roles", "inventory_file": "ansible/inventory",
        "groups": ["stage"],
        "ansible_env_vars": [Unknown('"SECRET=${vault("secret/x", "y")}"', at(p, 56),
                                     "vault() is read when Packer runs", prefix="SECRET=")],
    }
    assert ansible_local.playbook_file == Path("/proj/ansible/local.yml")
    assert ansible_local.settings == {
        "playbook_dir": "ansible", "role_paths": ["ansible/roles/one", "ansible/roles/two"],
        "group_vars": "ansible/group_vars", "host_vars": "ansible/host_vars",
        "galaxy_file": "ansible/requirements.yml",
    }  # staging_directory = null is not set


# --------------------------------------------------------------------------- blocks read without complaint


def test_other_builders_are_read_without_complaint() -> None:
    config = load("other_builders")
    assert config.sources == ()
    assert config.files == (HCL / "other_builders" / "o.pkr.hcl",)


def test_no_qemu_build_comes_before_dynamic_blocks_of_other_builders() -> None:
    # The planner reports "no qemu stage"; dynamic blocks elsewhere are no concern.
    assert load("non_qemu_dynamic").sources == ()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("scenario", "file", "message", "hint"), [
    ("errors_syntax", "s.pkr.hcl:2", "HCL syntax error at column 13: unexpected '\\n}\\n\\n'",
     "check the template with `packer validate`"),
    ("errors_unknown_variable", "u.pkr.hcl:5",
     'source "qemu" "x": iso_url: no variable "bild_dir" is declared', "did you mean var.build_dir?"),
    ("errors_unresolved", "u.pkr.hcl:2",
     'source "qemu" "x": iso_url: data source "http" is read when Packer runs',
     "vaultdoit needs this value before the build: use a literal or a variable"),
    ("errors_unsupported_function", "f.pkr.hcl:3",
     'source "qemu" "x": vm_name uses timestamp(), which changes on every run',
     "a build cache needs a stable path: use a fixed name or a variable"),
    # The failing value comes from the build's override block: that file is named.
    ("errors_override_file", "b_build.pkr.hcl:3",
     'source "qemu" "x": qemuargs: no local "missing" is defined', "define it in a locals block"),
    ("errors_provisioner", "p.pkr.hcl:8",
     'build "stage": provisioner "ansible": playbook_file: no local "playbooks" is defined',
     "define it in a locals block"),
    ("errors_dynamic", "d.pkr.hcl:5", 'build: "dynamic" blocks are not supported by vaultdoit',
     "write the blocks out: vaultdoit reads each stage's settings before the build"),
    ("errors_dynamic_provisioner", "d.pkr.hcl:6", 'build: "dynamic" blocks are not supported by vaultdoit',
     "write the blocks out: vaultdoit reads each stage's settings before the build"),
    ("errors_missing_source", "m.pkr.hcl:5", 'build: no source "qemu" "y" for source.qemu.y',
     'add a source "qemu" "y" block or remove source.qemu.y from the build'),
    ("errors_duplicate_names", "b.pkr.hcl:3",
     'two builds produce a qemu source named "x" (one.qemu.x and two.qemu.x)',
     'give one of them another name with `name = "..."` in a source block inside build'),
    ("errors_duplicate_source", "b.pkr.hcl:1",
     f'source "qemu" "x" is defined twice (also at {HCL / "errors_duplicate_source" / "a.pkr.hcl"}:1)',
     "keep one source block per name"),
    ("errors_var_file", "bad.auto.pkrvars.hcl:1",
     'variable "dir": cannot resolve value = "${var.other}/x"', "var files take literal values only"),
    ("errors_empty_iso", "e.pkr.hcl:7", 'source "qemu" "x": iso_url is empty',
     "set iso_url to the parent stage's image or an ISO"),
])
def test_errors_name_file_line_problem_and_fix(scenario: str, file: str, message: str, hint: str) -> None:
    error = load_error(HCL / scenario)
    assert (error.file, error.message, error.hint) == (str(HCL / scenario / file), message, hint)
    assert str(error) == f"{HCL / scenario / file}: {message} (fix: {hint})"


def test_missing_var_file(tmp_path: Path) -> None:
    error = load_error(HCL / "varfiles", var_files=[tmp_path / "nope.pkrvars.hcl"])
    assert (error.file, error.message) == (str(tmp_path / "nope.pkrvars.hcl"), "variable file not found")


def test_var_file_syntax_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.pkrvars.hcl", 'a = "x\n')
    error = load_error(HCL / "varfiles", var_files=[bad])
    assert error.file == at(bad, 1)
    assert error.message.startswith("HCL syntax error at column 6: ")


def test_variable_priority_default_auto_file_override() -> None:
    config = load("varfiles", var_files=[HCL / "varfiles/extra.pkrvars.hcl"], overrides={"c": "from-override"})
    (source,) = config.sources
    assert source.attrs["iso_url"] == "x/from-auto-from-file-from-override.qcow2"
    assert [p.name for p in config.var_files] == ["local.auto.pkrvars.hcl", "extra.pkrvars.hcl"]
    assert config.variables == {"a": "from-auto", "b": "from-file", "c": "from-override"}


@pytest.mark.parametrize(("source", "value", "message"), [
    ("overrides", {"memory": "lots"}, "-var memory='lots': a number is required, got \"lots\""),
    ("defaults", {"memory": [1]}, "vault.toml [variables] memory=[1]: a number is required, got a list"),
    ("env", {"PKR_VAR_frameworks": "[1"}, "PKR_VAR_frameworks='[1': not a valid value"),
])
def test_bad_values_name_the_variable_and_where_they_came_from(source: str, value: dict[str, Any],
                                                                message: str) -> None:
    error = load_error(HCL / "chain", **{source: value})
    assert error.file == at(HCL / "chain" / "variables.pkr.hcl", 19 if "memory" in message else 39)
    assert error.message.startswith(message)


def test_folder_without_templates(tmp_path: Path) -> None:
    assert load_error(tmp_path).message == "no *.pkr.hcl template in the folder"
    assert load_error(tmp_path / "missing").message == "template folder not found"


def test_json_templates_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.pkr.hcl", 'source "qemu" "x" {}\n')
    write(tmp_path, "b.pkr.json", "{}")
    error = load_error(tmp_path)
    assert (error.file, error.message) == (at(tmp_path / "b.pkr.json", 1), "JSON-syntax templates are not supported")


@pytest.mark.parametrize(("body", "line", "message"), [
    ('source "qemu" "x" {\n  iso_url = "a"\n  qemuargs = ["-m", "1"]\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n',
     3, 'source "qemu" "x": qemuargs: a list is required, got "-m"'),  # not a list of lists
    ('source "qemu" "x" {\n  iso_url = "a"\n  vm_name = "${env("X")}"\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n',
     3, 'source "qemu" "x": vm_name: env(): only variable defaults can read the environment'),
    ('source "qemu" "x" {\n  iso_url = "a"\n}\nbuild {\n  sources = ["source.qemu.x"]\n'
     '  provisioner "ansible" {\n    use_proxy = false\n  }\n}\n',
     6, 'build "source.qemu.x": provisioner "ansible": playbook_file is not set'),
    ('source "qemu" "x" {\n  iso_url = "a"\n}\nbuild {\n  sources = ["source.qemu.x"]\n'
     '  provisioner "ansible" {\n    playbook_file = "p.yml"\n    extra_arguments = ["-e", var.nope]\n  }\n}\n',
     8, 'build "source.qemu.x": provisioner "ansible": extra_arguments: no variable "nope" is declared'),
    ('variable "a" {}\nvariable "a" {}\n', 2, 'variable "a" is declared twice'),
    ('locals {\n  a = 1\n}\nlocals {\n  a = 2\n}\n', 5, 'local "a" is defined twice'),
    ('locals {\n  a = local.b\n  b = local.a\n}\nsource "qemu" "x" {\n  iso_url = local.a\n}\n'
     'build {\n  sources = ["source.qemu.x"]\n}\n',
     3, 'source "qemu" "x": iso_url: locals refer to each other in a cycle: local.a -> local.b -> local.a'),
    ('source "qemu" "x" {}\nbuild {\n  sources = ["qemu"]\n}\n', 3, 'build: "qemu" is not a source reference'),
    ('source "qemu" "x" {\n  iso_url = "a"\n  memory = 1 + "x"\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n',
     3, 'source "qemu" "x": memory: a number is required, got "x"'),  # Packer refuses it too
    ('source "qemu" "x" {\n  iso_url = "a"\n  iso_url = "b"\n}\n', 3, 'attribute "iso_url" is set twice'),
])
def test_template_errors(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = write(tmp_path, "t.pkr.hcl", body)
    error = load_error(tmp_path)
    assert error.file == at(path, line)
    assert error.message.startswith(message)
