"""Reading Packer template folders: variables, locals, functions, per-build overrides, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from vaultdoit import hcl
from vaultdoit.errors import TemplateError
from vaultdoit.hcl import load_packer_dir
from vaultdoit.model import PackerConfig, PackerSource, Provisioner

HCL = (FIXTURES / "hcl").resolve()
CWD = Path("/proj")
RESOLVE_HINT = "use a literal, var.*, local.*, path.root or a supported function"


def load(name: str, **kwargs: Any) -> PackerConfig:
    return load_packer_dir(HCL / name, cwd=CWD, **kwargs)


def by_name(config: PackerConfig) -> dict[str, PackerSource]:
    return {source.name: source for source in config.sources}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load_error(folder: Path, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        load_packer_dir(folder, cwd=CWD, **kwargs)
    return info.value


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


def test_chain_builds_only_the_sources_some_build_builds() -> None:
    config = load("chain")
    # "scratch" is defined but never built, so its unresolvable iso_url is no error.
    assert [s.name for s in config.sources] == ["drivers", "final", "frameworks"]
    assert [s.only for s in config.sources] == ["drivers.qemu.drivers", "qemu.final", "qemu.frameworks"]
    assert by_name(config)["frameworks"].file == HCL / "chain" / "frameworks.pkr.hcl"


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
    assert shell == Provisioner("shell", None)
    assert shell.settings == {"inline": ["apt-get update"]}
    assert ansible == Provisioner(
        "ansible",
        Path("/proj/ansible/frameworks.yml"),
        ("--extra-vars", "frameworks=django,flask", "--extra-vars", "flavour=auto", "-v"),
    )
    assert ansible.settings == {"use_proxy": False, "ansible_env_vars": ["ANSIBLE_NOCOLOR=1"]}
    assert source.attr_vars == {"accelerator": "accelerator", "memory": "memory", "ssh_password": "ssh_password"}


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
    assert config.variables["memory"] == 4096  # a string for a number variable is parsed, as -var does
    assert "not_declared" not in config.variables
    assert by_name(config)["final"].attrs["vm_name"] == "final-bookworm-cli.qcow2"

    # A string for a list variable is HCL text, as with -var.
    config = load("chain", overrides={"frameworks": '["fastapi", "flask"]'})
    assert config.variables["frameworks"] == ["fastapi", "flask"]
    assert "frameworks=fastapi,flask" in by_name(config)["frameworks"].provisioners[1].extra_arguments


def test_relative_paths_are_relative_to_cwd() -> None:
    config = load_packer_dir(Path("chain"), cwd=HCL, var_files=[Path("chain/ci.pkrvars.hcl")])
    assert config.directory == HCL / "chain"
    assert config.var_files[-1] == HCL / "chain" / "ci.pkrvars.hcl"
    drivers = by_name(config)["drivers"]
    assert drivers.provisioners[0].playbook_file == HCL / "ansible" / "drivers.yml"
    assert drivers.attrs["output_directory"] == "out/drivers"  # kept relative, as Packer sees it


# --------------------------------------------------------------------------- per-build overrides


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
    assert base.provisioners[1].settings["inline"] == ["echo not for custom"]
    assert [(p.type, p.playbook_file, p.extra_arguments) for p in custom.provisioners] == [
        ("ansible", Path("/proj/ansible/custom.yml"), ("-e", "name=custom")),
        ("shell", None, ()),
    ]
    assert custom.provisioners[1].settings["inline"] == ["echo only for custom"]


def test_overrides_beat_defaults_through_locals() -> None:
    _base, custom = load("overrides", overrides={"flavour": "prod"}).sources
    assert custom.attrs["iso_url"] == "build/prod/base.qcow2"


def test_outputs_default_to_packer_defaults(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", 'source "qemu" "x" {\n  iso_url = "a.qcow2"\n  vm_name = null\n}\n'
          'build {\n  source "source.qemu.x" {\n    name = "y"\n  }\n}\n')
    (source,) = load_packer_dir(tmp_path, cwd=CWD).sources
    assert source.name == "y"
    assert source.attrs == {"iso_url": "a.qcow2", "output_directory": "output-y", "vm_name": "packer-y"}


# --------------------------------------------------------------------------- functions and values


def test_functions_paths_and_nested_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULTDOIT_TEST_HOME", "/home/x")
    monkeypatch.setenv("HOME", "/home/me")
    config = load("functions")
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
        # Not needed by the graph and unresolvable: kept as text, no error.
        "boot_command": ["<enter>${data.unknown.value}"],
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
    assert ansible == Provisioner("ansible", Path("/proj/ansible/f.yml"))
    assert shell.type == "shell" and shell.playbook_file is None
    assert shell.settings == {"inline": ["echo /home/x"]}
    assert local.playbook_file == HCL / "p.yml"
    assert local.extra_arguments == ("--limit", "functions", "3", "true")


def test_variable_priority_default_auto_file_override() -> None:
    config = load("varfiles", var_files=[HCL / "varfiles/extra.pkrvars.hcl"], overrides={"c": "from-override"})
    (source,) = config.sources
    assert source.attrs["iso_url"] == "x/from-auto-from-file-from-override.qcow2"
    assert [p.name for p in config.var_files] == ["local.auto.pkrvars.hcl", "extra.pkrvars.hcl"]
    assert config.variables == {"a": "from-auto", "b": "from-file", "c": "from-override"}


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
    config = load_packer_dir(tmp_path, cwd=CWD)
    assert config.variables == {"size": 10, "name": "5", "on": True}
    attrs = config.sources[0].attrs
    assert (attrs["vm_name"], attrs["use_backing_file"], attrs["disk_size"]) == ("5-20.qcow2", True, "10G")


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
    (source,) = load_packer_dir(tmp_path, cwd=CWD).sources
    assert source.attr_vars == {"iso_url": "iso_url", "iso_checksum": "iso_checksum"}


def test_unset_variable_is_none_and_only_fails_where_used(tmp_path: Path) -> None:
    write(tmp_path, "t.pkr.hcl", """
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
    assert error.message == 'source "qemu" "x": cannot resolve iso_url = ${var.dir}/a.qcow2'
    config = load_packer_dir(tmp_path, cwd=CWD, overrides={"dir": "d"})
    assert config.variables == {"apt_proxy": None, "dir": "d"}
    assert config.sources[0].attrs["http_proxy"] == "${var.apt_proxy}"  # not a graph attribute


# --------------------------------------------------------------------------- the expression evaluator


SCOPE_VARS = {"s": "str", "n": 3, "l": ["a", "b"], "m": {"k": "v", "a-b": "dash"}, "t": True}


def evaluate(text: str) -> Any:
    variables = hcl._Variables(values=dict(SCOPE_VARS))
    scope = hcl._Scope(cwd="/work", variables=variables, path_root="/tpl", path_cwd="/work")
    scope.locals = hcl._Locals({"x": ("${var.s}-x", Path("t")), "self": ("${local.self}", Path("t"))}, scope)
    return hcl._resolve(text, scope.with_source("src", "qemu"))


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("${var.n}", 3),  # a lone interpolation keeps its type
    ("${var.l}", ["a", "b"]),
    ("n=${var.n} t=${var.t}", "n=3 t=true"),
    ("${var.s}${var.s}", "strstr"),
    ("${var.m.k}/${var.m[\"a-b\"]}/${var.l[1]}/${var.l.0}", "v/dash/b/a"),
    ("${local.x}", "str-x"),
    ("${path.root}:${path.cwd}:${source.name}:${source.type}", "/tpl:/work:src:qemu"),
    ('${upper("a${lower("B${var.s}")}c")}', "ABSTRC"),  # nested quotes and templates
    ('${"a\\"b\\\\c\\n"}', 'a"b\\c\n'),
    ('${"}"}', "}"),
    ('${format("%s", "}{")}', "}{"),
    ("$${var.s} %%{x}", "${var.s} %{x}"),
    ("${[1, 2.5, -3, 1e3, true, null]}", [1, 2.5, -3, 1000, True, None]),
    ('${{a = 1, "b" = var.s, c: [2]}}', {"a": 1, "b": "str", "c": [2]}),
    ("${var.n == 3 ? \"yes\" : var.nope}", "yes"),  # only the chosen branch is evaluated
    ("${var.n != 3 || var.t && !false}", True),
    ("${(var.n + 1) * 2 - 10 / 4 % 3}", 5.5),
    ("${var.n >= 3 && var.n < 4}", True),
    ("${-var.n}", -3),
    ('${"3" == 3}', False),
    ('${join("-", var.l, ["c"])}', "a-b-c"),
    ('${join("-", concat(var.l, ["c"]))}', "a-b-c"),
    ('${format("%s-%d-%v-%%", var.s, var.n, var.l)}', 'str-3-["a","b"]-%'),
    ('${format("%5s|%-3d|", "x", 7)}', "    x|7  |"),
    ('${coalesce("", var.s)}', "str"),
    ('${split(",", "a,,b")}', ["a", "", "b"]),
    ('${replace("a-b-c", "-", "/")}', "a/b/c"),
    ('${trimprefix(trimsuffix("pre.img.qcow2", ".qcow2"), "pre.")}', "img"),
    ('${basename("/a/b/")}/${basename("")}/${dirname("file")}/${dirname("/a")}/${dirname("a/b/")}', "b/././//a/b"),
    ('${abspath("x/../y/./z")}', "/work/y/z"),
    ('${abspath("/abs//p/")}', "/abs/p"),
    ('${length(var.l)}-${lookup(var.m, "zz", "def")}-${tostring(5)}-${tonumber("7") + 1}', "2-def-5-8"),
    ('${merge(var.m, {k = "w"}).k}', "w"),
    ('${join(",", [var.l, ["c"]]...)}', "a,b,c"),  # argument expansion
    ("${var.l # comment\n[0]}", "a"),
])
def test_expressions(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


@pytest.mark.parametrize("text", [
    "${var.nope}",
    "${local.nope}",
    "${local.self}",  # a cycle
    "${data.http.x.body}",
    "${build.name}",
    "${path.module}",
    "${timestamp()}",
    '${env("HOME")}',  # env() is for variable defaults only
    "${[for x in var.l : x]}",
    "${var.l[*]}",
    "${var.l[5]}",
    '${var.m["zz"]}',
    "x %{ if true }y%{ endif }",
    "${var.s + 1}",
    "${1 / 0}",
    '${format("%d", 1.5)}',
    '${format("%s %s", "a")}',
    '${coalesce("", "")}',
    '${upper(var.l)}',
    "${var.s",
    "${(1}",
])
def test_unsupported_expressions_raise(text: str) -> None:
    with pytest.raises(hcl._Unresolved):
        evaluate(text)


def test_heredocs() -> None:
    assert evaluate("<<EOT\nline ${var.s}\n  two\nEOT") == "line str\n  two\n"
    assert evaluate("<<-EOT\n    a\n\n      b\n    EOT") == "a\n\n  b\n"
    assert evaluate("<<not a heredoc") == "<<not a heredoc"


# --------------------------------------------------------------------------- blocks read without complaint


def test_other_builders_are_read_without_complaint() -> None:
    config = load("other_builders")
    assert config.sources == ()
    assert config.files == (HCL / "other_builders" / "o.pkr.hcl",)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("scenario", "file", "message", "hint"), [
    ("errors_syntax", "s.pkr.hcl",
     "HCL syntax error at line 2, column 13: Unexpected token Token('STRING_CHARS', '\\n}\\n\\n')",
     "check the template with `packer validate`"),
    ("errors_unknown_variable", "u.pkr.hcl",
     'source "qemu" "x": cannot resolve iso_url = ${var.bild_dir}/base.qcow2', RESOLVE_HINT),
    ("errors_unresolved", "u.pkr.hcl",
     'source "qemu" "x": cannot resolve iso_url = ${data.http.image.url}', RESOLVE_HINT),
    ("errors_unsupported_function", "f.pkr.hcl",
     'source "qemu" "x": cannot resolve vm_name = x-${timestamp()}.qcow2', RESOLVE_HINT),
    # The failing value comes from the build's override block: that file is named.
    ("errors_override_file", "b_build.pkr.hcl",
     'source "qemu" "x": cannot resolve qemuargs = [["-kernel", "${local.missing}/vmlinuz"]]', RESOLVE_HINT),
    ("errors_provisioner", "p.pkr.hcl",
     'build "stage": provisioner "ansible": cannot resolve playbook_file = ${local.playbooks}/x.yml', RESOLVE_HINT),
    ("errors_dynamic", "d.pkr.hcl",
     'build: "dynamic" blocks are not supported by vaultdoit', "write one source block per stage"),
    ("errors_dynamic_provisioner", "d.pkr.hcl",
     'build: "dynamic" blocks are not supported by vaultdoit', "write one source block per stage"),
    ("errors_missing_source", "m.pkr.hcl",
     'build: no source "qemu" "y" for source.qemu.y',
     'add a source "qemu" "y" block or remove source.qemu.y from the build'),
    ("errors_duplicate_names", "b.pkr.hcl",
     'two builds produce a qemu source named "x" (one.qemu.x and two.qemu.x)',
     'give one of them another name with `name = "..."` in a source block inside build'),
    ("errors_duplicate_source", "b.pkr.hcl",
     f'source "qemu" "x" is defined twice (also in {HCL / "errors_duplicate_source" / "a.pkr.hcl"})',
     "keep one source block per name"),
    ("errors_var_file", "bad.auto.pkrvars.hcl",
     'variable "dir": cannot resolve value = ${var.other}/x', "var files take literal values only"),
])
def test_errors_name_file_problem_and_fix(scenario: str, file: str, message: str, hint: str) -> None:
    error = load_error(HCL / scenario)
    assert (error.file, error.message, error.hint) == (str(HCL / scenario / file), message, hint)
    assert str(error) == f"{HCL / scenario / file}: {message} (fix: {hint})"


def test_missing_var_file(tmp_path: Path) -> None:
    error = load_error(HCL / "varfiles", var_files=[tmp_path / "nope.pkrvars.hcl"])
    assert (error.file, error.message) == (str(tmp_path / "nope.pkrvars.hcl"), "variable file not found")


def test_var_file_syntax_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.pkrvars.hcl", 'a = "x\n')
    error = load_error(HCL / "varfiles", var_files=[bad])
    assert error.file == str(bad)
    assert error.message.startswith("HCL syntax error at line 1, column 6: ")


def test_bad_override_for_a_number_variable() -> None:
    error = load_error(HCL / "chain", overrides={"memory": "lots"})
    assert error.file == str(HCL / "chain" / "variables.pkr.hcl")
    assert error.message.startswith("-var memory='lots': a number is required")


def test_folder_without_templates(tmp_path: Path) -> None:
    assert load_error(tmp_path).message == "no *.pkr.hcl template in the folder"
    assert load_error(tmp_path / "missing").message == "template folder not found"


def test_json_templates_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.pkr.hcl", 'source "qemu" "x" {}\n')
    write(tmp_path, "b.pkr.json", "{}")
    error = load_error(tmp_path)
    assert (error.file, error.message) == (str(tmp_path / "b.pkr.json"), "JSON-syntax templates are not supported")


@pytest.mark.parametrize(("body", "message"), [
    ('source "qemu" "x" {\n  iso_url = "a"\n  qemuargs = ["-m", "1"]\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n',
     'source "qemu" "x": cannot resolve qemuargs = ["-m", "1"]'),  # not a list of lists
    ('source "qemu" "x" {\n  iso_url = "a"\n  vm_name = "${env("X")}"\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n',
     'source "qemu" "x": cannot resolve vm_name = ${env("X")}'),
    ('source "qemu" "x" {\n  iso_url = "a"\n}\nbuild {\n  sources = ["source.qemu.x"]\n'
     '  provisioner "ansible" {\n    use_proxy = false\n  }\n}\n',
     'build "source.qemu.x": provisioner "ansible": playbook_file is not set'),
    ('source "qemu" "x" {\n  iso_url = "a"\n}\nbuild {\n  sources = ["source.qemu.x"]\n'
     '  provisioner "ansible" {\n    playbook_file = "p.yml"\n    extra_arguments = ["-e", var.nope]\n  }\n}\n',
     'build "source.qemu.x": provisioner "ansible": cannot resolve extra_arguments = ["-e", "${var.nope}"]'),
    ('variable "a" {}\nvariable "a" {}\n', 'variable "a" is declared twice'),
    ('locals {\n  a = 1\n}\nlocals {\n  a = 2\n}\n', 'local "a" is defined twice'),
    ('source "qemu" "x" {}\nbuild {\n  sources = ["qemu.x"]\n}\n', 'build: "qemu.x" is not a source reference'),
])
def test_template_errors(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, "t.pkr.hcl", body)
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert error.message.startswith(message)
