"""Reading Packer templates: variables, locals, functions, per-build overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES
from vaultdoit.errors import TemplateError
from vaultdoit.hcl import load_packer_dir

HCL = FIXTURES / "hcl"
CWD = Path("/proj")


def load(name: str, **kwargs):
    return load_packer_dir(HCL / name, cwd=CWD, **kwargs)


def test_per_build_override_renames_and_sets_paths():
    config = load("overrides")
    (source,) = config.sources
    assert source.name == "custom" and source.build_name == "variants"
    assert source.only == "variants.qemu.custom"
    assert source.attrs["iso_url"] == "build/demo/base.qcow2"  # format() with a local
    assert source.attrs["output_directory"] == "out/custom"  # ${source.name}
    assert source.attrs["vm_name"] == "packer-custom"  # Packer's default
    assert source.attrs["memory"] == 2048  # from the source block
    (prov,) = source.provisioners
    assert prov.playbook_file == Path("/proj/ansible/custom.yml")
    assert prov.extra_arguments == ("-e", "name=custom")


def test_overrides_beat_defaults():
    (source,) = load("overrides", overrides={"flavour": "prod"}).sources
    assert source.attrs["iso_url"] == "build/prod/base.qcow2"


def test_functions_paths_and_nested_quotes(monkeypatch):
    monkeypatch.setenv("VAULTDOIT_TEST_HOME", "/home/x")
    (source,) = load("functions").sources
    root = (HCL / "functions").resolve()
    assert source.attrs["iso_url"] == str(root.parent / "p.qcow2")
    assert source.attrs["output_directory"] == "build/stages/functions"
    assert source.attrs["vm_name"] == "f.qcow2"
    assert source.attrs["disk_size"] == "3G"
    assert source.attrs["format"] == "qcow2"
    assert source.attrs["qemuargs"] == [["-kernel", f"{root.parent}/vmlinuz"], ["-append", "x=A"]]
    # Not needed by the graph and unresolvable: kept as text, no error.
    assert source.attrs["boot_command"] == ["<enter>${data.unknown.value}"]
    assert source.attrs["shutdown_command"] == "sudo shutdown -P now\n"
    ansible, shell = source.provisioners
    assert ansible.playbook_file == Path("/proj/ansible/f.yml")
    assert shell.type == "shell" and shell.playbook_file is None
    assert shell.settings["inline"] == ["echo /home/x"]


def test_variable_priority_default_auto_file_override():
    config = load("varfiles", var_files=[HCL / "varfiles/extra.pkrvars.hcl"], overrides={"c": "from-override"})
    (source,) = config.sources
    assert source.attrs["iso_url"] == "x/from-auto-from-file-from-override.qcow2"
    assert [p.name for p in config.var_files] == ["local.auto.pkrvars.hcl", "extra.pkrvars.hcl"]
    assert "undeclared" not in config.variables


def test_other_builders_are_read_without_complaint():
    config = load("other_builders")
    assert config.sources == ()


@pytest.mark.parametrize(("scenario", "message"), [
    ("errors_dynamic", 'build: "dynamic" blocks are not supported by vaultdoit'),
    ("errors_unresolved", 'source "qemu" "x": cannot resolve iso_url = ${data.http.image.url}'),
    ("errors_syntax", "HCL syntax error at line 2, column 13"),
    ("errors_missing_source", 'build: no source "qemu" "y" for source.qemu.y'),
])
def test_errors_name_file_and_problem(scenario: str, message: str):
    with pytest.raises(TemplateError) as info:
        load(scenario)
    text = str(info.value)
    assert message in text
    assert text.startswith(str((HCL / scenario).resolve()))
    assert "(fix: " in text


def test_missing_var_file_is_an_error():
    with pytest.raises(TemplateError, match="variable file not found"):
        load("varfiles", var_files=[HCL / "varfiles/nope.pkrvars.hcl"])


def test_undeclared_variable_in_a_graph_attribute(tmp_path: Path):
    (tmp_path / "t.pkr.hcl").write_text(
        'source "qemu" "x" {\n  iso_url = "${var.nope}/a.qcow2"\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n')
    with pytest.raises(TemplateError, match=r'cannot resolve iso_url = \$\{var.nope\}/a.qcow2'):
        load_packer_dir(tmp_path, cwd=CWD)


def test_duplicate_build_names(tmp_path: Path):
    (tmp_path / "t.pkr.hcl").write_text(
        'source "qemu" "x" {\n  iso_url = "a"\n}\n'
        'build {\n  sources = ["source.qemu.x"]\n}\nbuild {\n  sources = ["source.qemu.x"]\n}\n')
    with pytest.raises(TemplateError, match='two builds produce a qemu source named "x"'):
        load_packer_dir(tmp_path, cwd=CWD)
