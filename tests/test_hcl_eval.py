"""The expression evaluator: syntax, operators, templates, functions and what cannot be known.

Functions Packer 1.6.6 lacks (so ``packer console`` cannot check them, see
test_hcl_console.py) are checked against the examples of Packer's and cty's
documentation.
"""

from __future__ import annotations

import base64
import hashlib
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from vaultdoit.errors import TemplateError
from vaultdoit.hcl import syntax
from vaultdoit.hcl.evaluate import Effects, EvalError, Namespace, Scope, Unresolved
from vaultdoit.hcl.functions import FUNCTIONS
from vaultdoit.hcl.loader import load_packer_dir

VARS = {"s": "str", "n": 3, "l": ["a", "b"], "m": {"k": "v", "a-b": "dash"}, "t": True, "nil": None}


def var(name: str, scope: Scope) -> Any:
    if name not in VARS:
        raise Unresolved(f'variable "{name}" has no value')
    return VARS[name]


def make_scope(base_dir: Path | str = "/tpl", env: dict[str, str] | None = None) -> Scope:
    return Scope(functions=FUNCTIONS, base_dir=str(base_dir), cwd="/work", env=env, names={"each": {"key": "k"}},
                 namespaces={"var": Namespace("var", var)})


def evaluate(text: str, scope: Scope | None = None) -> Any:
    return syntax.parse_expression(text, "<test>").ev(scope or make_scope())


# --------------------------------------------------------------------------- syntax and operators


@pytest.mark.parametrize(("text", "expected"), [
    ('"plain"', "plain"),
    ('"${var.n}"', 3),  # a lone interpolation keeps its type
    ('"${var.l}"', ["a", "b"]),
    ('"n=${var.n} t=${var.t}"', "n=3 t=true"),
    ('"${var.m.k}/${var.m["a-b"]}/${var.l[1]}/${var.l.0}"', "v/dash/b/a"),
    ('upper("a${lower("B${var.s}")}c")', "ABSTRC"),  # nested quotes and templates
    ('"a\\"b\\\\c\\n\\u00e9"', 'a"b\\c\né'),
    ('"}"', "}"),
    ('format("%s", "}{")', "}{"),
    ('"$${var.s} %%{x}"', "${var.s} %{x}"),
    ("[1, 2.5, -3, 1e3, true, null]", [1, 2.5, -3, 1000, True, None]),
    ('{a = 1, "b" = var.s, c: [2], (var.s) = 4}', {"a": 1, "b": "str", "c": [2], "str": 4}),
    ('var.n == 3 ? "yes" : var.nope', "yes"),  # only the chosen branch is evaluated
    ("var.nil == null ? 1 : 2", 1),
    ("var.n != 3 || var.t && !false", True),
    ("var.t || var.nope", True),  # && and || stop early
    ("(var.n + 1) * 2 - 10 / 4 % 3", 5.5),
    ("-7 % 3", -1),  # Go's remainder: the sign of the dividend
    ("0.1 + 0.2", 0.3),
    ('"2" + 1', 3),  # numeric strings convert, as in cty
    ("var.n >= 3 && var.n < 4", True),
    ("-var.n", -3),
    ('"3" == 3', False),
    ("[1, [2]] == [1, [2]]", True),
    ('join(",", [var.l, ["c"]]...)', "a,b,c"),  # argument expansion
    ("var.l # comment\n", ["a", "b"]),
    ("each.key", "k"),
    # for expressions and splats
    ("[for x in var.l : upper(x)]", ["A", "B"]),
    ('[for i, x in var.l : "${i}=${x}" if x != "a"]', ["1=b"]),
    ("{for k, v in var.m : v => k}", {"v": "k", "dash": "a-b"}),
    ('{for x in ["a", "b", "a"] : x => x...}', {"a": ["a", "a"], "b": ["b"]}),
    ("[{a = {b = 1}}, {a = {b = 2}}][*].a.b", [1, 2]),
    ("var.nil[*]", []),
    ('"x"[*]', ["x"]),
    # template directives and heredocs
    ('"%{ if var.t }y%{ else }n%{ endif }-%{ for i, x in var.l }${i}${x},%{ endfor }"', "y-0a,1b,"),
    ('"a %{~ if true ~}  b  %{~ endif ~} c"', "abc"),
    ('"%{ if var.n > 2 }${"big"}%{ endif }"', "big"),
    ("<<EOT\nline ${var.s}\n  \"two\" \\n ${upper(\"}\")}\nEOT\n", 'line str\n  "two" \\n }\n'),
    ("<<-EOT\n    a\n\n      b\n    EOT\n", "a\n\n  b\n"),
    ("<<-EOT\n  %{ for x in var.l ~}\n  - ${x}\n  %{ endfor ~}\n  EOT\n", "- a\n- b\n"),
])
def test_expressions(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


@pytest.mark.parametrize(("text", "reason", "prefix"), [
    ('"${var.nope}/x"', 'variable "nope" has no value', ""),
    ('"pre/${var.s}/${var.nope}/x"', 'variable "nope" has no value', "pre/str/"),
    ('"a/${"b/${var.nope}"}"', 'variable "nope" has no value', "a/b/"),  # nested templates keep the prefix
    ('"a/${upper(var.nope)}"', 'variable "nope" has no value', "a/"),  # a function's result has none
    ("try(var.nope, 1)", 'variable "nope" has no value', ""),  # unknown stays unknown, as in HCL
    ("can(var.nope)", 'variable "nope" has no value', ""),
    ('vault("secret/x", "k")', "vault() is read when Packer runs", ""),
    ('consul_key("k")', "consul_key() is read when Packer runs", ""),
    ("not_a_function(1)", "function not_a_function() is not supported by vaultdoit", ""),
    ('regex("\\\\pL+", "a")', "the regular expression '\\\\pL+' uses RE2 features vaultdoit does not evaluate",
     ""),
])
def test_unknown_values(text: str, reason: str, prefix: str) -> None:
    with pytest.raises(Unresolved) as info:
        evaluate(text)
    assert (info.value.reason, info.value.prefix) == (reason, prefix)


@pytest.mark.parametrize(("text", "message"), [
    ('var.s + 1', 'a number is required, got "str"'),
    ("1 / 0", "division by zero"),
    ("var.l[5]", "index 5 is out of range (the list has 2 elements)"),
    ('var.m["zz"]', 'the map has no key "zz"'),
    ("var.m.zz", 'the object has no attribute "zz"'),
    ("nothing", 'unknown name "nothing"'),
    ('"${var.l}x"', "a list cannot be used as a string"),
    ('"${var.nil}"x', "HCL syntax error"),
    ('format("%d", 1.5)', "format(): a whole number is required, got 1.5"),
    ('format("%s %s", "a")', "format(): not enough arguments for %s at 3"),
    ('coalesce("", "")', "coalesce(): no non-null, non-empty-string arguments"),
    ("upper(var.l)", "upper(): a list cannot be used as a string"),
    ('env("HOME")', "env(): only variable defaults can read the environment"),
    ('regex("x", "y")', "regex(): pattern did not match any part of the given string"),
    ("range(2000)", "range(): more than 1024 numbers"),
    ("{for x in [1, 1] : x => x}", 'duplicate key "1" in a for expression'),
    ('formatdate("YYY", "2018-01-02T23:12:01Z")', 'formatdate(): invalid date format verb "YYY"'),
    ('formatdate("YYYY", "2018-01-02")', "formatdate(): \"2018-01-02\" is not an RFC 3339 timestamp"),
    ('timeadd("2018-01-02T23:12:01Z", "10")', 'timeadd(): invalid duration "10"'),
    ("templatefile()", "templatefile(): takes 2 arguments, got 0"),
    ("upper()", "upper(): takes 1 arguments, got 0"),
    ('try(var.m.zz, var.l[9])', "try(): no expression succeeded"),
])
def test_wrong_expressions(text: str, message: str) -> None:
    with pytest.raises((EvalError, syntax.HCLSyntaxError)) as info:
        evaluate(text)
    assert info.value.message.startswith(message)


def test_errors_carry_the_line_of_the_failing_part(tmp_path: Path) -> None:
    node = syntax.parse_text('x = [\n  1,\n  upper(var.l),\n]\n', str(tmp_path / "t.pkr.hcl")).attributes["x"].expr
    with pytest.raises(EvalError) as info:
        node.ev(make_scope())
    assert info.value.where == f"{tmp_path / 't.pkr.hcl'}:3"


def test_env_in_variable_defaults() -> None:
    assert evaluate('env("X")', make_scope(env={"X": "value"})) == "value"
    assert evaluate('env("UNSET")', make_scope(env={})) == ""


# --------------------------------------------------------------------------- functions 1.6.6 lacks, from the docs


@pytest.mark.parametrize(("text", "expected"), [
    # regular expressions
    ('regex("[a-z]+", "53453453.345345aaabbbccc23454")', "aaabbbccc"),
    ('regex("(\\\\d\\\\d\\\\d\\\\d)-(\\\\d\\\\d)-(\\\\d\\\\d)", "2019-02-01")', ["2019", "02", "01"]),
    ('regex("^(?:(?P<scheme>[^:/?#]+):)?(?://(?P<authority>[^/?#]*))?", "https://terraform.io/docs/")',
     {"authority": "terraform.io", "scheme": "https"}),
    ('regexall("[a-z]+", "1234abcd5678efgh9")', ["abcd", "efgh"]),
    ('length(regexall("[a-z]+", "1234abcd5678efgh9"))', 2),
    ('regex("[[:digit:]]+", "ab12")', "12"),
    # replace: a /regex/ as in newer Packer, plain text otherwise
    ('replace("1 + 2 + 3", "+", "-")', "1 - 2 - 3"),
    ('replace("hello world", "/w.*d/", "everybody")', "hello everybody"),
    ('replace("v1.2", "/v(\\\\d+)\\\\.(\\\\d+)/", "$2-$1")', "2-1"),
    # type conversions
    ('[tostring("hello"), tostring(1), tostring(true), tostring(null)]', ["hello", "1", "true", None]),
    ('[tonumber("1"), tonumber(null), tobool("true"), tobool(null)]', [1, None, True, None]),
    ('tolist(["a", "b", 3])', ["a", "b", "3"]),
    ('toset(["c", "b", "b"])', ["b", "c"]),
    ('tomap({"a" = "foo", "b" = true})', {"a": "foo", "b": "true"}),
    ('convert(["a", 1], list(string))', ["a", "1"]),
    # collections
    ('index(["a", "b", "c"], "b")', 1),
    ("sum([10, 13, 6, 4.5])", 33.5),
    ('[alltrue(["true", true]), alltrue([true, false]), anytrue([]), anytrue([false, true])]',
     [True, False, False, True]),
    ('setsubtract(["a", "b", "c"], ["a", "c"])', ["b"]),
    ('transpose({"a" = ["1", "2"], "b" = ["2", "3"]})', {"1": ["a"], "2": ["a", "b"], "3": ["b"]}),
    ('[one([]), one(["hello"])]', [None, "hello"]),
    ('matchkeys(["i-123", "i-abc", "i-def"], ["us-west", "us-east", "us-east"], ["us-east"])', ["i-abc", "i-def"]),
    ('chunklist(["a", "b", "c", "d", "e"], 2)', [["a", "b"], ["c", "d"], ["e"]]),
    ('coalescelist([], ["c", "d"])', ["c", "d"]),
    ('element(["a", "b", "c"], 3)', "a"),
    ('flatten([["a", "b"], [], ["c"]])', ["a", "b", "c"]),
    ('merge({a = "b", c = "d"}, {e = "f", c = "z"})', {"a": "b", "c": "z", "e": "f"}),
    ('distinct(["a", "b", "a", "c", "d", "b"])', ["a", "b", "c", "d"]),
    ('slice(["a", "b", "c", "d"], 1, 3)', ["b", "c"]),
    # strings
    ('[startswith("hello world", "hello"), endswith("hello world", "xx"), strcontains("hello world", "wor")]',
     [True, False, True]),
    ('[trim("foobar", "far"), trimprefix("helloworld", "hello"), title("hello world"), chomp("hello\\r\\n")]',
     ["oob", "world", "Hello World", "hello"]),
    ('indent(2, "[\\n  foo,\\n  bar,\\n]\\n")', "[\n    foo,\n    bar,\n  ]\n  "),
    ('formatlist("Hello, %s!", ["Valentina", "Ander"])', ["Hello, Valentina!", "Hello, Ander!"]),
    ('[parseint("FF", 16), parseint("-10", 16), parseint("1011111011101111", 2), parseint("aA", 62)]',
     [255, -16, 48879, 656]),
    # encodings and hashes
    ('textencodebase64("Hello World", "UTF-16LE")', "SABlAGwAbABvACAAVwBvAHIAbABkAA=="),
    ('textdecodebase64("SABlAGwAbABvACAAVwBvAHIAbABkAA==", "UTF-16LE")', "Hello World"),
    ('base64sha256("hello world")', "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="),
    ('[md5("hello world"), sha1("hello world")]',
     ["5eb63bbbe01eeed093cb22bb8f5acdc3", "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"]),
    ('uuidv5("dns", "www.terraform.io")', "a5008fae-b28c-5ba5-96cd-82b4c53552d6"),
    ('urlencode("Hello World!")', "Hello+World%21"),
    ('urlencode("☃")', "%E2%98%83"),
    ('yamldecode("{a: &foo [1, 2, 3], b: *foo}")', {"a": [1, 2, 3], "b": [1, 2, 3]}),
    ('jsondecode("true")', True),
    # dates
    ('formatdate("DD MMM YYYY hh:mm ZZZ", "2018-01-02T23:12:01Z")', "02 Jan 2018 23:12 UTC"),
    ('formatdate("EEEE, DD-MMM-YY hh:mm:ss ZZZ", "2018-01-02T23:12:01Z")', "Tuesday, 02-Jan-18 23:12:01 UTC"),
    ('formatdate("EEE, DD MMM YYYY hh:mm:ss ZZZ", "2018-01-02T23:12:01-08:00")', "Tue, 02 Jan 2018 23:12:01 -0800"),
    ('formatdate("MMM DD, YYYY", "2018-01-02T23:12:01Z")', "Jan 02, 2018"),
    ('formatdate("HH:mmaa", "2018-01-02T23:12:01Z")', "11:12pm"),
    ("formatdate(\"h 'o''clock'\", \"2018-01-02T23:12:01Z\")", "23 o'clock"),
    ('timeadd("2017-11-22T00:00:00Z", "10m")', "2017-11-22T00:10:00Z"),
    ('timeadd("2017-11-22T00:00:00Z", "-1h30m")', "2017-11-21T22:30:00Z"),
    # network prefixes
    ('cidrhost("fd00:fd12:3456:7890:00a2::/72", 34)', "fd00:fd12:3456:7890::22"),
    ('cidrsubnets("10.1.0.0/16", 4, 4, 8, 4)', ["10.1.0.0/20", "10.1.16.0/20", "10.1.32.0/24", "10.1.48.0/20"]),
    # paths
    ('[basename("foo/bar/baz.txt"), dirname("foo/bar/baz.txt"), abspath("x/../y")]', ["baz.txt", "foo/bar", "/work/y"]),
])
def test_functions_from_the_documentation(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


def test_non_deterministic_functions_are_fixed_and_recorded() -> None:
    scope = make_scope()
    assert evaluate('formatdate("YYYY-MM-DD", timestamp())', scope) == "1970-01-01"
    assert evaluate("uuidv4()", scope) == "00000000-0000-4000-8000-000000000000"
    assert scope.effects.volatile == {"timestamp()", "uuidv4()"}


# --------------------------------------------------------------------------- file functions


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "backends.tftpl").write_text(
        "%{ for addr in ip_addrs ~}\nbackend ${addr}:${port}\n%{ endfor ~}\n")
    (tmp_path / "tpl" / "config.tftpl").write_text(
        '${jsonencode({"backends": [for addr in ip_addrs : "${addr}:${port}"]})}')
    (tmp_path / "tpl" / "nested.tftpl").write_text('${templatefile("backends.tftpl", {})}')
    (tmp_path / "tpl" / "broken.tftpl").write_text("line one\n${ upper( }\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xffdata")
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/a.sh", "d/b.txt", "d/e/c.sh", "d/.hidden.sh"):
        (tmp_path / name).write_text(name)
    return tmp_path


def test_templatefile_as_documented(files: Path) -> None:
    scope = make_scope(files)
    args = '{port = 8080, ip_addrs = ["10.0.0.1", "10.0.0.2"]}'
    assert evaluate(f'templatefile("tpl/backends.tftpl", {args})', scope) == \
        "backend 10.0.0.1:8080\nbackend 10.0.0.2:8080\n"
    assert evaluate(f'templatefile("tpl/config.tftpl", {args})', scope) == \
        '{"backends":["10.0.0.1:8080","10.0.0.2:8080"]}'
    assert scope.effects.reads == {f"{files}/tpl/backends.tftpl", f"{files}/tpl/config.tftpl"}


@pytest.mark.parametrize(("text", "message", "line"), [
    ('templatefile("tpl/nested.tftpl", {})', "templatefile() cannot be called from inside a template file", 1),
    ('templatefile("tpl/backends.tftpl", {port = 1})', 'unknown name "ip_addrs"', 1),
    ('templatefile("tpl/broken.tftpl", {})', "HCL syntax error", 2),
])
def test_templatefile_errors_name_the_template_line(files: Path, text: str, message: str, line: int) -> None:
    with pytest.raises(EvalError) as info:
        evaluate(text, make_scope(files))
    assert message in info.value.message
    assert info.value.where is not None and info.value.where.endswith(f".tftpl:{line}")


def test_file_hashes_and_base64_read_bytes(files: Path) -> None:
    scope = make_scope(files)
    data = b"\x00\xffdata"
    assert evaluate('filebase64("blob.bin")', scope) == base64.b64encode(data).decode()
    assert evaluate('[filemd5("blob.bin"), filesha256("blob.bin")]', scope) == [
        hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()]
    assert evaluate('filebase64sha256("blob.bin")', scope) == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert scope.effects.reads == {f"{files}/blob.bin"}
    with pytest.raises(EvalError, match="not UTF-8 text"):
        evaluate('file("blob.bin")', scope)


def test_fileset_lists_and_records_matching_files(files: Path) -> None:
    scope = make_scope(files)
    assert evaluate('fileset("d", "**/*.sh")', scope) == [".hidden.sh", "a.sh", "e/c.sh"]
    assert evaluate('fileset("d", "*.{sh,txt}")', scope) == [".hidden.sh", "a.sh", "b.txt"]
    assert scope.effects.reads == {f"{files}/d/{n}" for n in (".hidden.sh", "a.sh", "e/c.sh", "b.txt")}


def test_file_errors(files: Path) -> None:
    with pytest.raises(EvalError, match=f"no file exists at {files}/missing.txt"):
        evaluate('file("missing.txt")', make_scope(files))
    with pytest.raises(EvalError, match="is a folder"):
        evaluate('file("d")', make_scope(files))
    assert evaluate('[fileexists("d/a.sh"), fileexists("nope")]', make_scope(files)) == [True, False]


# --------------------------------------------------------------------------- hostile input


def bounded(action: Any) -> tuple[float, int]:
    """Seconds and peak bytes of memory allocated by ``action``."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        action()
    finally:
        seconds = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return seconds, peak


def test_a_huge_template_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.pkr.hcl"
    with path.open("w") as handle:
        handle.write("# junk\n" * (50 * 2**20 // 7))  # 50 MB
    holder: list[TemplateError] = []

    def load() -> None:
        with pytest.raises(TemplateError) as info:
            load_packer_dir(tmp_path, cwd=tmp_path, env={})
        holder.append(info.value)

    seconds, peak = bounded(load)
    assert seconds < 2 and peak < 300 * 2**20
    size = path.stat().st_size // 1024
    assert str(holder[0]) == (f"{path}:1: the file is {size} KiB, more than the 256 KiB vaultdoit reads "
                              "(fix: split it or remove generated content)")


def test_a_huge_var_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.pkr.hcl").write_text('variable "x" {\n  default = 1\n}\n')
    (tmp_path / "big.auto.pkrvars.hcl").write_text("x = 1\n" + "# junk\n" * 60_000)
    with pytest.raises(TemplateError, match="the variable file is 410 KiB, more than the 256 KiB"):
        load_packer_dir(tmp_path, cwd=tmp_path, env={})


@pytest.mark.parametrize("text", [
    "(" * 100 + "1" + ")" * 100,
    "[" * 100 + "]" * 100,
    "upper(" * 100 + '"x"' + ")" * 100,
    '"${' * 100 + "1" + '}"' * 100,
    "<<EOT\n${" + "(" * 100 + "1" + ")" * 100 + "}\nEOT\n",
])
def test_deep_nesting_is_one_line_not_a_crash(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.pkr.hcl"
    path.write_text(f"locals {{\n  x = {text}\n}}\n")
    holder: list[TemplateError] = []

    def load() -> None:
        with pytest.raises(TemplateError) as info:
            load_packer_dir(tmp_path, cwd=tmp_path, env={})
        holder.append(info.value)

    seconds, peak = bounded(load)
    assert seconds < 2 and peak < 300 * 2**20
    error = holder[0]
    assert error.file is not None and error.file.startswith(f"{path}:")
    assert error.message == "expression nested more than 64 levels deep"
    assert "\n" not in str(error)


def test_dense_templates_stay_within_memory_bounds(tmp_path: Path) -> None:
    """An eighth of the size limit of dense text: under an eighth of 300 MB (it grows linearly)."""
    line = 'locals {\n  l%d = ["a-${upper("b")}", 1 + 2, {k = "v"}]\n}\n'
    text, size = [], 0
    while size < syntax.MAX_FILE_BYTES // 8:
        text.append(line % len(text))
        size += len(text[-1])
    (tmp_path / "t.pkr.hcl").write_text("".join(text))
    _seconds, peak = bounded(lambda: load_packer_dir(tmp_path, cwd=tmp_path, env={}))
    assert peak < 300 * 2**20 // 8


def test_long_lines_are_cut_in_messages(tmp_path: Path) -> None:
    (tmp_path / "t.pkr.hcl").write_text('x = "' + "y" * 5000 + ' ${nope(}"\n')
    with pytest.raises(TemplateError) as info:
        load_packer_dir(tmp_path, cwd=tmp_path, env={})
    assert len(str(info.value)) < 400


def test_locals_chains_are_bounded(tmp_path: Path) -> None:
    chain = "".join(f"  l{i} = local.l{i + 1}\n" for i in range(200))
    (tmp_path / "t.pkr.hcl").write_text(
        f'locals {{\n{chain}  l200 = "end"\n}}\nsource "qemu" "x" {{\n  iso_url = local.l0\n}}\n'
        'build {\n  sources = ["source.qemu.x"]\n}\n')
    with pytest.raises(TemplateError, match="locals refer to locals more than 32 levels deep"):
        load_packer_dir(tmp_path, cwd=tmp_path, env={})


def test_effects_merge() -> None:
    a, b = Effects({"x"}, set()), Effects({"y"}, {"timestamp()"})
    a.merge(b)
    assert (a.reads, a.volatile) == ({"x", "y"}, {"timestamp()"})
