"""Read a folder of Packer HCL2 templates the way ``packer build DIR`` loads it.

This is the only module that talks to python-hcl2. python-hcl2 gives back every
non-literal value as a ``"${...}"`` string, so the second half of this module is a
small parser and evaluator for the part of the HCL expression language that real
templates use (references, function calls, string templates, lists, maps,
operators and conditionals).

Public entry point: :func:`load_packer_dir`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import hcl2
from hcl2 import SerializationOptions

from vaultdoit.errors import TemplateError
from vaultdoit.model import PackerConfig, PackerSource, Provisioner

__all__ = ["load_packer_dir", "SOURCE_GRAPH_ATTRS", "PROVISIONER_GRAPH_ATTRS", "ANSIBLE_TYPES"]

# Attributes the stage graph depends on: these must resolve, or loading fails.
SOURCE_GRAPH_ATTRS = (
    "iso_url",
    "iso_checksum",
    "output_directory",
    "vm_name",
    "disk_image",
    "use_backing_file",
    "format",
    "disk_size",
    "qemuargs",
)
PROVISIONER_GRAPH_ATTRS = ("playbook_file", "extra_arguments")
ANSIBLE_TYPES = ("ansible", "ansible-local")

_STR_ATTRS = ("iso_url", "iso_checksum", "output_directory", "vm_name", "format")
_BOOL_ATTRS = ("disk_image", "use_backing_file")

_RESOLVE_HINT = "use a literal, var.*, local.*, path.root or a supported function"
_SYNTAX_HINT = "check the template with `packer validate`"
_DYNAMIC_HINT = "write one source block per stage"

# Values rather than source text: unquoted strings, plain dicts for blocks.
# Heredocs stay raw: python-hcl2 drops the final newline HCL keeps (see _heredoc).
_HCL_OPTIONS = SerializationOptions(
    strip_string_quotes=True,
    explicit_blocks=False,
    with_comments=False,
    preserve_heredocs=True,
)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def load_packer_dir(
    directory: Path,
    *,
    cwd: Path,
    var_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> PackerConfig:
    """Load every ``*.pkr.hcl`` of ``directory`` with its variables, as ``packer build DIR`` would.

    Variable priority, lowest first: declared defaults, ``*.auto.pkrvars.hcl`` of the
    folder (sorted), ``var_files`` in the given order, then ``overrides`` (``-var``).
    Relative paths (``directory``, ``var_files``) are taken relative to ``cwd``.
    Raises :class:`TemplateError` for anything Packer would reject that matters here,
    and for graph attributes (see ``SOURCE_GRAPH_ATTRS``) that cannot be resolved.
    """
    cwd_abs = _clean_path(os.path.join(os.getcwd(), str(cwd)))
    root = Path(_clean_path(os.path.join(cwd_abs, str(directory))))
    templates, auto_var_files = _list_folder(root)
    explicit = [Path(_clean_path(os.path.join(cwd_abs, str(p)))) for p in var_files]

    parsed = [(path, _read_hcl(path)) for path in templates]
    variables = _Variables()
    for path, body in parsed:
        _declare_variables(variables, body, path, cwd_abs)
    for path in [*auto_var_files, *explicit]:
        _apply_var_file(variables, path, cwd_abs)
    _apply_overrides(variables, overrides or {}, cwd_abs)

    local_exprs = _collect_locals(parsed)
    base = _Scope(cwd=cwd_abs, variables=variables, path_root=str(root), path_cwd=cwd_abs)
    base.locals = _Locals(local_exprs, base)

    sources = _build_sources(parsed, base)
    return PackerConfig(
        directory=root,
        files=tuple(templates),
        var_files=(*auto_var_files, *explicit),
        variables=variables.as_dict(),
        sources=tuple(sources),
    )


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _list_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """The templates and auto var files Packer loads from a folder (not recursive)."""
    if not root.is_dir():
        raise TemplateError(
            "template folder not found", file=root, hint="point the stage at a folder of *.pkr.hcl files"
        )
    names = sorted(entry.name for entry in root.iterdir() if entry.is_file())
    json_files = [n for n in names if n.endswith((".pkr.json", ".pkrvars.json"))]
    if json_files:
        # Packer would load these too; ignoring them would give a wrong graph.
        raise TemplateError(
            "JSON-syntax templates are not supported", file=root / json_files[0], hint="rewrite it as *.pkr.hcl"
        )
    templates = [root / n for n in names if n.endswith(".pkr.hcl")]
    if not templates:
        raise TemplateError(
            "no *.pkr.hcl template in the folder", file=root, hint="add the Packer templates of the stage"
        )
    auto = [root / n for n in names if n.endswith(".auto.pkrvars.hcl")]
    return templates, auto


def _read_hcl(path: Path) -> dict[str, Any]:
    """Parse one HCL file into python-hcl2's dict form, mapping every failure to TemplateError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        what = "variable file" if path.name.endswith(".pkrvars.hcl") else "file"
        raise TemplateError(f"{what} not found", file=path, hint="check the path") from None
    except UnicodeDecodeError:
        raise TemplateError("not a UTF-8 text file", file=path, hint=_SYNTAX_HINT) from None
    except OSError as exc:
        raise TemplateError(f"cannot read the file: {exc.strerror}", file=path, hint="check its permissions") from None
    try:
        return hcl2.loads(text, serialization_options=_HCL_OPTIONS)
    except Exception as exc:  # lark errors mostly, but python-hcl2 also raises plain ones
        raise TemplateError(_syntax_message(exc), file=path, hint=_SYNTAX_HINT) from None


def _syntax_message(exc: Exception) -> str:
    """``HCL syntax error at line L, column C: <first line of the parser message>``."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else type(exc).__name__
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    if not (isinstance(line, int) and line > 0):
        return f"HCL syntax error: {first}"
    # lark repeats the position at the end of its first line; say it once, up front.
    suffix = f" at line {line}, column {column}."
    if first.endswith(suffix):
        first = first[: -len(suffix)]
    return f"HCL syntax error at line {line}, column {column}: {first}"


def _blocks(body: Mapping[str, Any], kind: str) -> list[Any]:
    """The blocks of one type in a body; python-hcl2 gives a list, or a dict for a lone one."""
    value = body.get(kind, [])
    if isinstance(value, dict):
        return [value]
    return list(value) if isinstance(value, list) else []


def _labelled(blocks: list[Any]) -> list[tuple[str, Any]]:
    """Flatten ``[{label: body}, ...]`` into ``(label, body)`` pairs."""
    return [(label, inner) for block in blocks if isinstance(block, dict) for label, inner in block.items()]


# ---------------------------------------------------------------------------
# Variables and locals
# ---------------------------------------------------------------------------


@dataclass
class _Variables:
    """Declared input variables: resolved values and why the others have none."""

    values: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    types: dict[str, str | None] = field(default_factory=dict)
    declared_in: dict[str, Path] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Every declared variable; None for one that has no usable value."""
        return {name: self.values.get(name) for name in sorted(self.declared_in)}

    def set(self, name: str, value: Any) -> None:
        self.values[name] = value
        self.missing.pop(name, None)

    def get(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.missing:
            raise _Unresolved(self.missing[name])
        raise _Unresolved(f"variable {name!r} is not declared")


def _declare_variables(variables: _Variables, body: Mapping[str, Any], path: Path, cwd: str) -> None:
    """Record ``variable "x" {}`` and ``variables {}`` declarations with their defaults."""
    decls: list[tuple[str, Mapping[str, Any]]] = [
        (name, spec if isinstance(spec, dict) else {}) for name, spec in _labelled(_blocks(body, "variable"))
    ]
    for block in _blocks(body, "variables"):
        if isinstance(block, dict):
            decls.extend((name, {"default": value}) for name, value in block.items())
    # env() is allowed in defaults only, and nothing else but literals and functions.
    scope = _Scope(cwd=cwd, allow_env=True)
    for name, spec in decls:
        if name in variables.declared_in:
            raise TemplateError(
                f'variable "{name}" is declared twice (also in {variables.declared_in[name]})',
                file=path,
                hint="keep one declaration",
            )
        variables.declared_in[name] = path
        variables.types[name] = _type_name(spec.get("type"))
        if "default" not in spec:
            variables.missing[name] = f"variable {name!r} has no value"
            continue
        try:
            value = _convert_type(_resolve(spec["default"], scope), variables.types[name])
        except _Unresolved as exc:
            # Resolved lazily: only an error if something the graph needs uses it.
            variables.missing[name] = f"default of variable {name!r}: {exc}"
            continue
        if value is None:
            variables.missing[name] = f"variable {name!r} has no value"
        else:
            variables.set(name, value)


def _type_name(raw: Any) -> str | None:
    """``string`` / ``${list(string)}`` from python-hcl2 to ``string`` / ``list(string)``."""
    if not isinstance(raw, str):
        return None
    text = raw[2:-1] if raw.startswith("${") and raw.endswith("}") else raw
    return "".join(text.split())


def _convert_type(value: Any, type_name: str | None) -> Any:
    """Convert a value to a primitive type constraint as Packer (cty) would; others pass through."""
    if value is None or type_name not in ("string", "number", "bool"):
        return value
    if type_name == "string":
        return _to_str(value)
    if type_name == "number":
        return _to_number(value)
    return _to_bool(value)


def _apply_var_file(variables: _Variables, path: Path, cwd: str) -> None:
    """Set declared variables from a ``*.pkrvars.hcl``; undeclared names only warn in Packer."""
    scope = _Scope(cwd=cwd)  # var files take literal values
    for name, raw in _read_hcl(path).items():
        if name not in variables.declared_in:
            continue
        try:
            value = _convert_type(_resolve(raw, scope), variables.types[name])
        except _Unresolved:
            raise TemplateError(
                f'variable "{name}": cannot resolve value = {_raw_text(raw)}',
                file=path,
                hint="var files take literal values only",
            ) from None
        variables.set(name, value)


def _apply_overrides(variables: _Variables, overrides: Mapping[str, Any], cwd: str) -> None:
    """Apply ``-var name=value`` values: strings of non-string variables are parsed as HCL."""
    for name, value in overrides.items():
        if name not in variables.declared_in:
            continue
        type_name = variables.types[name]
        try:
            # Like -var: a string for a list, map or object variable is HCL text.
            if isinstance(value, str) and type_name not in (None, "string", "number", "bool"):
                value = _Parser.expression(value).evaluate(_Scope(cwd=cwd))
            value = _convert_type(value, type_name)
        except _Unresolved as exc:
            raise TemplateError(
                f'-var {name}={value!r}: {exc}', file=variables.declared_in[name], hint=f"give a {type_name} value"
            ) from None
        variables.set(name, value)


def _collect_locals(parsed: list[tuple[Path, dict[str, Any]]]) -> dict[str, tuple[Any, Path]]:
    """Raw expressions of ``locals {}`` and ``local "x" { expression = ... }`` blocks."""
    exprs: dict[str, tuple[Any, Path]] = {}

    def add(name: str, raw: Any, path: Path) -> None:
        if name in exprs:
            raise TemplateError(
                f'local "{name}" is defined twice (also in {exprs[name][1]})', file=path, hint="keep one definition"
            )
        exprs[name] = (raw, path)

    for path, body in parsed:
        for block in _blocks(body, "locals"):
            if isinstance(block, dict):
                for name, raw in block.items():
                    add(name, raw, path)
        for name, spec in _labelled(_blocks(body, "local")):
            if not isinstance(spec, dict) or "expression" not in spec:
                raise TemplateError(f'local "{name}" has no expression', file=path, hint="add `expression = ...`")
            add(name, spec["expression"], path)
    return exprs


class _Locals:
    """Locals evaluated on first use, so their order of definition does not matter."""

    def __init__(self, exprs: dict[str, tuple[Any, Path]], scope: _Scope) -> None:
        self._exprs = exprs
        self._scope = scope
        self._values: dict[str, Any] = {}
        self._active: set[str] = set()

    def get(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name not in self._exprs:
            raise _Unresolved(f"local {name!r} is not defined")
        if name in self._active:
            raise _Unresolved(f"local {name!r} refers to itself")
        self._active.add(name)
        try:
            value = _resolve(self._exprs[name][0], self._scope)
        finally:
            self._active.discard(name)
        self._values[name] = value
        return value


# ---------------------------------------------------------------------------
# Sources and builds
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _SourceBlock:
    type: str
    label: str
    body: dict[str, Any]
    file: Path


@dataclass(frozen=True)
class _BuildEntry:
    """One source a build builds: from its ``sources`` list, or a ``source`` block with overrides."""

    ref: str
    override: dict[str, Any]


def _build_sources(parsed: list[tuple[Path, dict[str, Any]]], base: _Scope) -> list[PackerSource]:
    """Every qemu source some build builds, with overrides applied and values resolved."""
    blocks = _collect_source_blocks(parsed)
    result: list[PackerSource] = []
    seen: dict[str, PackerSource] = {}
    for path, body in parsed:
        for build in _blocks(body, "build"):
            if not isinstance(build, dict):
                continue
            for source in _build_one(build, path, blocks, base):
                if source.name in seen:
                    raise TemplateError(
                        f'two builds produce a qemu source named "{source.name}"'
                        f" ({seen[source.name].only} and {source.only})",
                        file=path,
                        hint='give one of them another name with `name = "..."` in a source block inside build',
                    )
                seen[source.name] = source
                result.append(source)
    return result


def _collect_source_blocks(parsed: list[tuple[Path, dict[str, Any]]]) -> dict[tuple[str, str], _SourceBlock]:
    """All ``source "<type>" "<name>"`` blocks of the folder, by (type, name)."""
    blocks: dict[tuple[str, str], _SourceBlock] = {}
    for path, body in parsed:
        for src_type, named in _labelled(_blocks(body, "source")):
            if not isinstance(named, dict):
                continue
            for label, src_body in named.items():
                key = (src_type, label)
                if key in blocks:
                    raise TemplateError(
                        f'source "{src_type}" "{label}" is defined twice (also in {blocks[key].file})',
                        file=path,
                        hint="keep one source block per name",
                    )
                blocks[key] = _SourceBlock(src_type, label, src_body if isinstance(src_body, dict) else {}, path)
    return blocks


def _build_one(
    build: dict[str, Any], path: Path, blocks: Mapping[tuple[str, str], _SourceBlock], base: _Scope
) -> list[PackerSource]:
    """The qemu sources of one ``build`` block."""
    if "dynamic" in build:
        raise TemplateError('build: "dynamic" blocks are not supported by vaultdoit', file=path, hint=_DYNAMIC_HINT)
    entries = [_BuildEntry(_unwrap_ref(ref), {}) for ref in _as_list(build.get("sources"))]
    entries += [
        _BuildEntry(_unwrap_ref(label), inner if isinstance(inner, dict) else {})
        for label, inner in _labelled(_blocks(build, "source"))
    ]
    build_name = _build_name(build, path, base)
    label = build_name or ", ".join(entry.ref for entry in entries)
    out: list[PackerSource] = []
    for entry in entries:
        block = _find_source(entry.ref, blocks, build_name, path)
        if block.type == "qemu":
            out.append(_make_source(block, entry.override, build, path, label, build_name, base))
    return out


def _build_name(build: Mapping[str, Any], path: Path, base: _Scope) -> str | None:
    """``build { name = ... }``: part of the ``-only`` selector, so it must resolve."""
    if build.get("name") is None:
        return None
    try:
        return _to_str(_resolve(build["name"], base))
    except _Unresolved:
        raise TemplateError(
            f"build: cannot resolve name = {_raw_text(build['name'])}", file=path, hint=_RESOLVE_HINT
        ) from None


def _unwrap_ref(ref: Any) -> str:
    """``"source.qemu.x"``; an unquoted reference comes back from python-hcl2 as ``${...}``."""
    text = str(ref)
    return text[2:-1].strip() if text.startswith("${") and text.endswith("}") else text


def _find_source(
    ref: str, blocks: Mapping[tuple[str, str], _SourceBlock], build_name: str | None, path: Path
) -> _SourceBlock:
    """The source block a build entry names, or a TemplateError naming the reference."""
    where = f'build "{build_name}"' if build_name else "build"
    parts = ref.split(".")
    if len(parts) != 3 or parts[0] != "source":
        raise TemplateError(
            f'{where}: "{ref}" is not a source reference', file=path, hint='write "source.<type>.<name>"'
        )
    block = blocks.get((parts[1], parts[2]))
    if block is None:
        raise TemplateError(
            f'{where}: no source "{parts[1]}" "{parts[2]}" for {ref}',
            file=path,
            hint=f'add a source "{parts[1]}" "{parts[2]}" block or remove {ref} from the build',
        )
    return block


def _make_source(
    block: _SourceBlock,
    override: Mapping[str, Any],
    build: Mapping[str, Any],
    build_file: Path,
    label: str,
    build_name: str | None,
    base: _Scope,
) -> PackerSource:
    """Merge a qemu source with its per-build override and resolve everything."""
    where = f'source "qemu" "{block.label}"'
    name = block.label
    if override.get("name") is not None:
        try:
            name = _to_str(_resolve(override["name"], base))
        except _Unresolved:
            raise TemplateError(
                f"{where}: cannot resolve name = {_raw_text(override['name'])}", file=build_file, hint=_RESOLVE_HINT
            ) from None
    # Override wins (newer Packer); each value remembers the file it came from for errors.
    merged = {key: (raw, block.file) for key, raw in block.body.items()}
    merged.update((key, (raw, build_file)) for key, raw in override.items() if key != "name")
    if "dynamic" in merged:
        raise TemplateError(
            f'{where}: "dynamic" blocks are not supported by vaultdoit', file=merged["dynamic"][1], hint=_DYNAMIC_HINT
        )

    scope = base.with_source(name, "qemu")
    attrs: dict[str, Any] = {}
    for key, (raw, file) in merged.items():
        if key in SOURCE_GRAPH_ATTRS:
            value = _resolve_graph_attr(raw, scope, where, key, file)
        else:
            value = _resolve_lenient(raw, scope)
        if value is not None:  # null means "not set" in HCL
            attrs[key] = value
    attrs.setdefault("output_directory", f"output-{name}")
    attrs.setdefault("vm_name", f"packer-{name}")

    provisioners = _provisioners(build, scope, f"qemu.{name}", label, build_file)
    attr_vars = {key: var for key, (raw, _file) in merged.items() if (var := _lone_variable(raw)) is not None}
    return PackerSource(
        name=name,
        file=block.file,
        attrs=attrs,
        provisioners=provisioners,
        build_name=build_name,
        attr_vars=attr_vars,
    )


def _lone_variable(raw: Any) -> str | None:
    """``X`` when a value is written as just ``var.X`` (so a caller can set it with ``-var``)."""
    if not isinstance(raw, str) or not raw.startswith("${"):
        return None
    try:
        node = _Parser.template(raw)
    except _Unresolved:
        return None
    if isinstance(node, _Template) and len(node.parts) == 1:
        ref = node.parts[0]
        if isinstance(ref, _Reference) and ref.root == "var":
            return ref.attr
    return None


def _resolve_graph_attr(raw: Any, scope: _Scope, where: str, key: str, file: Path) -> Any:
    """Resolve a source attribute the graph needs and give it the type Packer expects."""
    try:
        value = _resolve(raw, scope)
        if value is None:
            return None
        if key in _STR_ATTRS:
            return _to_str(value)
        if key in _BOOL_ATTRS:
            return _to_bool(value)
        if key == "qemuargs":
            return [[_to_str(arg) for arg in _as_sequence(row)] for row in _as_sequence(value)]
        return value
    except _Unresolved:
        raise TemplateError(
            f"{where}: cannot resolve {key} = {_raw_text(raw)}", file=file, hint=_RESOLVE_HINT
        ) from None


def _provisioners(
    build: Mapping[str, Any], scope: _Scope, selector: str, label: str, build_file: Path
) -> tuple[Provisioner, ...]:
    """The build's provisioners that run for one source, in order, honouring only/except."""
    out: list[Provisioner] = []
    for ptype, body in _labelled(_blocks(build, "provisioner")):
        body = body if isinstance(body, dict) else {}
        if not _runs_for(body, selector, scope):
            continue
        where = f'build "{label}": provisioner "{ptype}"'
        settings = {
            key: _resolve_lenient(raw, scope) for key, raw in body.items() if key not in PROVISIONER_GRAPH_ATTRS
        }
        if ptype not in ANSIBLE_TYPES:
            out.append(Provisioner(type=ptype, playbook_file=None, settings=settings))
            continue
        out.append(
            Provisioner(
                type=ptype,
                playbook_file=_playbook_path(body, scope, where, build_file),
                extra_arguments=_extra_arguments(body, scope, where, build_file),
                settings=settings,
            )
        )
    return tuple(out)


def _runs_for(body: Mapping[str, Any], selector: str, scope: _Scope) -> bool:
    """Packer's ``only`` / ``except`` on a provisioner match ``<type>.<name>`` of the source."""
    only = _resolve_lenient(body.get("only"), scope)
    if isinstance(only, list) and only and selector not in only:
        return False
    excluded = _resolve_lenient(body.get("except"), scope)
    return not (isinstance(excluded, list) and selector in excluded)


def _playbook_path(body: Mapping[str, Any], scope: _Scope, where: str, file: Path) -> Path:
    """``playbook_file`` as an absolute path (relative ones are relative to Packer's cwd)."""
    raw = body.get("playbook_file")
    if raw is None:
        raise TemplateError(f"{where}: playbook_file is not set", file=file, hint="set playbook_file")
    try:
        text = _to_str(_resolve(raw, scope))
    except _Unresolved:
        raise TemplateError(
            f"{where}: cannot resolve playbook_file = {_raw_text(raw)}", file=file, hint=_RESOLVE_HINT
        ) from None
    return Path(_clean_path(os.path.join(scope.cwd, text)))


def _extra_arguments(body: Mapping[str, Any], scope: _Scope, where: str, file: Path) -> tuple[str, ...]:
    """``extra_arguments`` as a tuple of strings (numbers and bools become strings, as in Packer)."""
    raw = body.get("extra_arguments")
    if raw is None:
        return ()
    try:
        return tuple(_to_str(arg) for arg in _as_sequence(_resolve(raw, scope)))
    except _Unresolved:
        raise TemplateError(
            f"{where}: cannot resolve extra_arguments = {_raw_text(raw)}", file=file, hint=_RESOLVE_HINT
        ) from None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else ([] if value is None else [value])


def _raw_text(raw: Any) -> str:
    """The template text of a value for error messages (lists shown HCL-like)."""
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)


# ---------------------------------------------------------------------------
# Resolving python-hcl2 values
# ---------------------------------------------------------------------------


class _Unresolved(Exception):
    """An expression uses something this reader cannot evaluate (the message says what)."""


@dataclass
class _Scope:
    """What expressions may refer to at one place of a template."""

    cwd: str  # for abspath(); Packer's working directory
    variables: _Variables | None = None  # None: var.* not allowed here
    locals: _Locals | None = None
    path_root: str | None = None
    path_cwd: str | None = None
    source: Mapping[str, str] | None = None  # source.name / source.type inside builds
    allow_env: bool = False  # env() is only allowed in variable defaults

    def with_source(self, name: str, src_type: str) -> _Scope:
        return _Scope(
            cwd=self.cwd,
            variables=self.variables,
            locals=self.locals,
            path_root=self.path_root,
            path_cwd=self.path_cwd,
            source={"name": name, "type": src_type},
        )

    def lookup(self, root: str, attr: str) -> Any:
        """Value of ``root.attr`` (``var.x``, ``local.x``, ``path.root``, ``source.name``)."""
        if root == "var" and self.variables is not None:
            return self.variables.get(attr)
        if root == "local" and self.locals is not None:
            return self.locals.get(attr)
        if root == "path" and attr == "root" and self.path_root is not None:
            return self.path_root
        if root == "path" and attr == "cwd" and self.path_cwd is not None:
            return self.path_cwd
        if root == "source" and self.source is not None and attr in self.source:
            return self.source[attr]
        raise _Unresolved(f"{root}.{attr} is not available here")


def _resolve(value: Any, scope: _Scope) -> Any:
    """Evaluate a python-hcl2 value: strings are templates, lists and dicts recursively."""
    if isinstance(value, str):
        if value.startswith("<<"):
            value = _heredoc(value)
        if "${" not in value and "%{" not in value:
            return value
        return _Parser.template(value).evaluate(scope)
    if isinstance(value, list):
        return [_resolve(item, scope) for item in value]
    if isinstance(value, dict):
        return {_resolve_key(key, scope): _resolve(item, scope) for key, item in value.items()}
    return value


def _heredoc(raw: str) -> str:
    """The template text of a raw heredoc: its body lines, each ending in a newline.

    ``<<-`` removes the smallest indentation of the non-blank lines. Backslashes
    are not escapes in heredocs, so the body is already template text.
    """
    lines = raw.split("\n")
    opener = lines[0]
    marker = opener[3:] if opener.startswith("<<-") else opener[2:]
    if len(lines) < 2 or not marker.strip() or lines[-1].strip() != marker.strip():
        return raw  # a plain string that happens to start with "<<"
    body = lines[1:-1]
    if opener.startswith("<<-"):
        indent = min((len(line) - len(line.lstrip(" ")) for line in body if line.strip()), default=0)
        body = [line[indent:] for line in body]
    return "".join(line + "\n" for line in body)


def _resolve_key(key: Any, scope: _Scope) -> Any:
    return _to_str(_resolve(key, scope)) if isinstance(key, str) else key


def _resolve_lenient(value: Any, scope: _Scope) -> Any:
    """Like :func:`_resolve`, but each part that cannot be resolved keeps its raw text."""
    if isinstance(value, list):
        return [_resolve_lenient(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: _resolve_lenient(item, scope) for key, item in value.items()}
    try:
        return _resolve(value, scope)
    except _Unresolved:
        return _heredoc(value) if isinstance(value, str) and value.startswith("<<") else value


# ---------------------------------------------------------------------------
# Value conversions (cty's rules, for the primitive types)
# ---------------------------------------------------------------------------


def _number_str(value: int | float) -> str:
    """A number as cty prints it: ``3``, ``2.5``, never ``3.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_str(value)
    if value is None:
        raise _Unresolved("a string is required, got null")
    raise _Unresolved(f"a string is required, got {type(value).__name__}")


def _to_number(value: Any) -> int | float:
    if isinstance(value, bool) or value is None:
        raise _Unresolved(f"a number is required, got {_to_debug(value)}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return _normal_number(float(value)) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    raise _Unresolved(f"a number is required, got {_to_debug(value)}")


def _normal_number(value: float) -> int | float:
    """cty has one number type: keep whole numbers as int."""
    return int(value) if value.is_integer() and abs(value) < 2**63 else value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _Unresolved(f"a bool is required, got {_to_debug(value)}")


def _to_int(value: Any) -> int:
    number = _to_number(value)
    if isinstance(number, float):
        raise _Unresolved(f"a whole number is required, got {number}")
    return number


def _as_sequence(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    raise _Unresolved(f"a list is required, got {_to_debug(value)}")


def _to_debug(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


def _clean_path(path: str) -> str:
    """Go's ``filepath.Clean``: lexical, ``""`` becomes ``.``, one leading slash."""
    if not path:
        return "."
    cleaned = os.path.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


# ---------------------------------------------------------------------------
# Expression syntax tree
# ---------------------------------------------------------------------------


class _Node:
    """A parsed expression; evaluating it may raise _Unresolved."""

    def evaluate(self, scope: _Scope) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class _Literal(_Node):
    value: Any

    def evaluate(self, scope: _Scope) -> Any:
        return self.value


@dataclass(frozen=True)
class _Template(_Node):
    """A string template: literal text and ``${...}`` parts."""

    parts: tuple[str | _Node, ...]

    def evaluate(self, scope: _Scope) -> Any:
        # "${x}" alone keeps x's type (list, number...), as in HCL.
        if len(self.parts) == 1 and isinstance(self.parts[0], _Node):
            return self.parts[0].evaluate(scope)
        return "".join(part if isinstance(part, str) else _to_str(part.evaluate(scope)) for part in self.parts)


@dataclass(frozen=True)
class _Reference(_Node):
    root: str
    attr: str

    def evaluate(self, scope: _Scope) -> Any:
        return scope.lookup(self.root, self.attr)


@dataclass(frozen=True)
class _Name(_Node):
    """A bare identifier: never valid on its own in Packer (``data`` needs more parts...)."""

    name: str

    def evaluate(self, scope: _Scope) -> Any:
        raise _Unresolved(f"unknown name {self.name!r}")


@dataclass(frozen=True)
class _GetAttr(_Node):
    target: _Node
    name: str

    def evaluate(self, scope: _Scope) -> Any:
        if isinstance(self.target, _Name):
            raise _Unresolved(f"unknown reference {self.target.name}.{self.name}")
        return _index(self.target.evaluate(scope), self.name)


@dataclass(frozen=True)
class _Index(_Node):
    target: _Node
    key: _Node

    def evaluate(self, scope: _Scope) -> Any:
        return _index(self.target.evaluate(scope), self.key.evaluate(scope))


def _index(container: Any, key: Any) -> Any:
    """``x[key]`` / ``x.key`` on a list or a map."""
    if isinstance(container, dict):
        name = _to_str(key)
        if name not in container:
            raise _Unresolved(f"the map has no key {name!r}")
        return container[name]
    if isinstance(container, list):
        index = _to_int(key)
        if not 0 <= index < len(container):
            raise _Unresolved(f"index {index} is out of range")
        return container[index]
    raise _Unresolved(f"cannot index {_to_debug(container)}")


@dataclass(frozen=True)
class _ListExpr(_Node):
    items: tuple[_Node, ...]

    def evaluate(self, scope: _Scope) -> Any:
        return [item.evaluate(scope) for item in self.items]


@dataclass(frozen=True)
class _ObjectExpr(_Node):
    pairs: tuple[tuple[_Node, _Node], ...]

    def evaluate(self, scope: _Scope) -> Any:
        return {_to_str(key.evaluate(scope)): value.evaluate(scope) for key, value in self.pairs}


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    args: tuple[_Node, ...]
    expand_last: bool = False  # f(a, list...)

    def evaluate(self, scope: _Scope) -> Any:
        spec = _FUNCTIONS.get(self.name)
        if spec is None:
            raise _Unresolved(f"function {self.name}() is not supported")
        args = [arg.evaluate(scope) for arg in self.args]
        if self.expand_last:
            args = args[:-1] + _as_sequence(args[-1]) if args else args
        low, high, impl = spec
        if len(args) < low or (high is not None and len(args) > high):
            raise _Unresolved(f"wrong number of arguments for {self.name}()")
        return impl(scope, args)


@dataclass(frozen=True)
class _Unary(_Node):
    op: str
    operand: _Node

    def evaluate(self, scope: _Scope) -> Any:
        value = self.operand.evaluate(scope)
        return (not _to_bool(value)) if self.op == "!" else -_to_number(value)


@dataclass(frozen=True)
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node

    def evaluate(self, scope: _Scope) -> Any:
        # && and || short-circuit so a guarded reference need not resolve.
        if self.op == "&&":
            return _to_bool(self.left.evaluate(scope)) and _to_bool(self.right.evaluate(scope))
        if self.op == "||":
            return _to_bool(self.left.evaluate(scope)) or _to_bool(self.right.evaluate(scope))
        return _binary(self.op, self.left.evaluate(scope), self.right.evaluate(scope))


@dataclass(frozen=True)
class _Conditional(_Node):
    condition: _Node
    if_true: _Node
    if_false: _Node

    def evaluate(self, scope: _Scope) -> Any:
        # Only the chosen branch is evaluated.
        branch = self.if_true if _to_bool(self.condition.evaluate(scope)) else self.if_false
        return branch.evaluate(scope)


def _binary(op: str, left: Any, right: Any) -> Any:
    """Arithmetic, comparison and equality with cty's typing (no bool/number mixing)."""
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    a, b = _to_number(left), _to_number(right)
    if op in ("<", ">", "<=", ">="):
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    if op in ("/", "%") and b == 0:
        raise _Unresolved("division by zero")
    if op == "/":
        return _normal_number(a / b)
    if op == "%":
        return a % b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    return bool(left == right)


# ---------------------------------------------------------------------------
# Expression parser (recursive descent over characters)
# ---------------------------------------------------------------------------

# Binary operators by precedence, lowest first (HCL spec).
_BINARY_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<=", ">=", "<", ">"),
    ("+", "-"),
    ("*", "/", "%"),
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class _Parser:
    """Parses expression text and string templates into :class:`_Node` trees.

    Recursive descent keeps quotes and braces matched at any depth, e.g.
    ``${abspath("${path.root}/../p.yml")}``.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- entry points (cached: the same text shows up once per built source) --

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def template(text: str) -> _Node:
        """A python-hcl2 string value: escapes already decoded, ``$${`` still escaped."""
        return _Parser(text)._template(quoted=False)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def expression(text: str) -> _Node:
        """Bare expression text, as given to ``-var`` for a non-string variable."""
        parser = _Parser(text)
        node = parser._expression()
        parser._skip_space()
        if parser.pos != len(text):
            parser._fail("unexpected text")
        return node

    # -- low level --

    def _fail(self, what: str) -> NoReturn:
        raise _Unresolved(f"{what} at offset {self.pos} of {self.text!r}")

    def _peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def _char(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip_space(self) -> None:
        """Skip whitespace, newlines and comments inside an expression."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace():
                self.pos += 1
            elif self._peek("#") or self._peek("//"):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif self._peek("/*"):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    self._fail("unterminated comment")
                self.pos = end + 2
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip_space()
        if not self._peek(token):
            self._fail(f"expected {token!r}")
        self.pos += len(token)

    def _accept(self, token: str) -> bool:
        self._skip_space()
        if self._peek(token):
            self.pos += len(token)
            return True
        return False

    def _identifier(self) -> str | None:
        """HCL identifier: a letter or ``_``, then letters, digits, ``_`` or ``-``."""
        start = self.pos
        if not (self._char().isalpha() or self._char() == "_"):
            return None
        self.pos += 1
        while self._char() and (self._char().isalnum() or self._char() in "_-"):
            self.pos += 1
        return self.text[start : self.pos]

    # -- templates --

    def _template(self, *, quoted: bool) -> _Node:
        """Literal text with ``${expr}`` parts, up to a closing quote or the end of the text.

        ``quoted`` is a string literal inside an expression: backslash escapes are
        still raw there, and the closing ``"`` ends it.
        """
        parts: list[str | _Node] = []
        buf: list[str] = []
        while True:
            if self.pos >= len(self.text):
                if quoted:
                    self._fail("unterminated string")
                break
            if quoted and self._peek('"'):
                self.pos += 1
                break
            if self._peek("$${") or self._peek("%%{"):
                buf.append(self.text[self.pos + 1 : self.pos + 3])
                self.pos += 3
            elif self._peek("${"):
                self.pos += 2
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(self._expression())
                self._expect("}")
            elif self._peek("%{"):
                self._fail("template directives (%{...}) are not supported")
            elif quoted and self._peek("\\"):
                buf.append(self._escape())
            else:
                buf.append(self.text[self.pos])
                self.pos += 1
        if buf:
            parts.append("".join(buf))
        if not parts:
            return _Literal("")
        if len(parts) == 1 and isinstance(parts[0], str):
            return _Literal(parts[0])
        return _Template(tuple(parts))

    def _escape(self) -> str:
        """A backslash escape of a quoted string: ``\\n``, ``\\"``, ``\\uXXXX``..."""
        marker = self.text[self.pos + 1 : self.pos + 2]
        if marker in _ESCAPES:
            self.pos += 2
            return _ESCAPES[marker]
        if marker in ("u", "U"):
            width = 4 if marker == "u" else 8
            digits = self.text[self.pos + 2 : self.pos + 2 + width]
            try:
                char = chr(int(digits, 16)) if len(digits) == width else None
            except ValueError:
                char = None
            if char is not None:
                self.pos += 2 + width
                return char
        self._fail("invalid escape sequence")

    # -- expressions --

    def _expression(self) -> _Node:
        """``cond ? a : b`` or a binary expression."""
        node = self._binary(0)
        if self._accept("?"):
            if_true = self._expression()
            self._expect(":")
            if_false = self._expression()
            return _Conditional(node, if_true, if_false)
        return node

    def _binary(self, level: int) -> _Node:
        if level == len(_BINARY_LEVELS):
            return self._unary()
        node = self._binary(level + 1)
        while True:
            op = self._binary_operator(_BINARY_LEVELS[level])
            if op is None:
                return node
            node = _Binary(op, node, self._binary(level + 1))

    def _binary_operator(self, ops: tuple[str, ...]) -> str | None:
        self._skip_space()
        for op in ops:
            # "=" after "<"/">" belongs to "<="/">="; "!" alone is unary, "==" not "=".
            if self._peek(op) and not (op in ("<", ">") and self._peek(op + "=")):
                self.pos += len(op)
                return op
        return None

    def _unary(self) -> _Node:
        self._skip_space()
        if self._peek("!") and not self._peek("!="):
            self.pos += 1
            return _Unary("!", self._unary())
        if self._peek("-"):
            self.pos += 1
            return _Unary("-", self._unary())
        return self._postfix(self._primary())

    def _postfix(self, node: _Node) -> _Node:
        """``.attr``, ``.0`` and ``[key]`` after a value; splats are not supported."""
        while True:
            self._skip_space()
            if self._peek(".*") or self._peek("[*]"):
                self._fail("splat expressions are not supported")
            if self._peek("..."):  # argument expansion, handled by _call
                return node
            if self._peek("."):
                self.pos += 1
                self._skip_space()
                name = self._identifier() or self._digits()
                if name is None:
                    self._fail("expected an attribute name")
                node = self._attr(node, name)
            elif self._peek("["):
                self.pos += 1
                key = self._expression()
                self._expect("]")
                node = _Index(node, key)
            else:
                return node

    @staticmethod
    def _attr(node: _Node, name: str) -> _Node:
        if isinstance(node, _Name):
            return _Reference(node.name, name)
        if isinstance(node, _Reference) and node.root not in ("var", "local", "path", "source"):
            # data.x.y, build.x...: keep the full path for the error message.
            return _GetAttr(_Name(f"{node.root}.{node.attr}"), name)
        return _GetAttr(node, name)

    def _digits(self) -> str | None:
        start = self.pos
        while self._char().isdigit():
            self.pos += 1
        return self.text[start : self.pos] or None

    def _primary(self) -> _Node:
        self._skip_space()
        char = self._char()
        if char == '"':
            self.pos += 1
            return self._template(quoted=True)
        if self._peek("<<"):
            self._fail("heredocs inside expressions are not supported")
        if char == "(":
            self.pos += 1
            node = self._expression()
            self._expect(")")
            return node
        if char == "[":
            return self._list()
        if char == "{":
            return self._object()
        if char.isdigit():
            return self._number()
        name = self._identifier()
        if name is None:
            self._fail("expected an expression")
        return self._after_identifier(name)

    def _after_identifier(self, name: str) -> _Node:
        if name in ("true", "false"):
            return _Literal(name == "true")
        if name == "null":
            return _Literal(None)
        if name == "for":
            self._fail("for expressions are not supported")
        self._skip_space()
        if self._peek("("):
            return self._call(name)
        return _Name(name)

    def _call(self, name: str) -> _Node:
        self.pos += 1  # "("
        args: list[_Node] = []
        expand = False
        while not self._accept(")"):
            args.append(self._expression())
            if self._accept("..."):
                expand = True
                self._expect(")")
                break
            if not self._accept(","):
                self._expect(")")
                break
        return _Call(name, tuple(args), expand)

    def _list(self) -> _Node:
        self.pos += 1  # "["
        self._skip_space()
        if self._peek("for") and not (self.text[self.pos + 3 : self.pos + 4].isalnum()):
            self._fail("for expressions are not supported")
        items: list[_Node] = []
        while not self._accept("]"):
            items.append(self._expression())
            if not self._accept(","):
                self._expect("]")
                break
        return _ListExpr(tuple(items))

    def _object(self) -> _Node:
        self.pos += 1  # "{"
        self._skip_space()
        if self._peek("for") and not (self.text[self.pos + 3 : self.pos + 4].isalnum()):
            self._fail("for expressions are not supported")
        pairs: list[tuple[_Node, _Node]] = []
        while not self._accept("}"):
            key = self._object_key()
            self._skip_space()
            if self._peek("==") or not (self._peek("=") or self._peek(":")):
                self._fail("expected '=' or ':' in object")
            self.pos += 1
            pairs.append((key, self._expression()))
            self._accept(",")  # commas are optional between lines
        return _ObjectExpr(tuple(pairs))

    def _object_key(self) -> _Node:
        """A bare identifier key is a literal name, anything else an expression."""
        self._skip_space()
        start = self.pos
        name = self._identifier()
        if name is not None:
            self._skip_space()
            if (self._peek("=") and not self._peek("==")) or self._peek(":"):
                return _Literal(name)
            self.pos = start
        return self._binary(0)

    def _number(self) -> _Node:
        start = self.pos
        self._digits()
        is_float = False
        if self._peek(".") and self.text[self.pos + 1 : self.pos + 2].isdigit():
            is_float = True
            self.pos += 1
            self._digits()
        if self._char() in ("e", "E"):
            mark = self.pos
            self.pos += 1
            if self._char() in ("+", "-"):
                self.pos += 1
            if self._digits() is None:
                self.pos = mark
            else:
                is_float = True
        text = self.text[start : self.pos]
        return _Literal(_normal_number(float(text)) if is_float else int(text))


# ---------------------------------------------------------------------------
# Functions (the Packer 1.6 ones templates use)
# ---------------------------------------------------------------------------


def _fn_abspath(scope: _Scope, args: list[Any]) -> str:
    return _clean_path(os.path.join(scope.cwd, _to_str(args[0])))


def _fn_basename(scope: _Scope, args: list[Any]) -> str:
    """Go's ``filepath.Base``."""
    path = _to_str(args[0])
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


def _fn_dirname(scope: _Scope, args: list[Any]) -> str:
    """Go's ``filepath.Dir``."""
    path = _to_str(args[0])
    return _clean_path(path[: path.rfind("/") + 1])


def _fn_pathexpand(scope: _Scope, args: list[Any]) -> str:
    path = _to_str(args[0])
    return os.path.expanduser(path) if path.startswith("~") else path


def _fn_env(scope: _Scope, args: list[Any]) -> str:
    if not scope.allow_env:
        raise _Unresolved("env() is only allowed in variable defaults")
    return os.environ.get(_to_str(args[0]), "")


def _fn_join(scope: _Scope, args: list[Any]) -> str:
    sep = _to_str(args[0])
    return sep.join(_to_str(item) for lst in args[1:] for item in _as_sequence(lst))


def _fn_concat(scope: _Scope, args: list[Any]) -> list[Any]:
    return [item for lst in args for item in _as_sequence(lst)]


def _fn_split(scope: _Scope, args: list[Any]) -> list[str]:
    sep, text = _to_str(args[0]), _to_str(args[1])
    return text.split(sep) if sep else list(text)


def _fn_coalesce(scope: _Scope, args: list[Any]) -> Any:
    for value in args:
        if value is not None and value != "":
            return value
    raise _Unresolved("coalesce(): no non-null, non-empty-string arguments")


def _fn_length(scope: _Scope, args: list[Any]) -> int:
    value = args[0]
    if isinstance(value, (list, dict, str)):
        return len(value)
    raise _Unresolved(f"length() of {_to_debug(value)}")


def _fn_lookup(scope: _Scope, args: list[Any]) -> Any:
    mapping, key = args[0], _to_str(args[1])
    if not isinstance(mapping, dict):
        raise _Unresolved("lookup() needs a map")
    if key in mapping:
        return mapping[key]
    if len(args) == 3:
        return args[2]
    raise _Unresolved(f"lookup(): no key {key!r}")


def _fn_merge(scope: _Scope, args: list[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for mapping in args:
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise _Unresolved("merge() needs maps")
        merged.update(mapping)
    return merged


def _fn_format(scope: _Scope, args: list[Any]) -> str:
    """``format()`` with the verbs templates use: %s %v %d %f %q %t and %%, flags, width, precision."""
    spec, values = _to_str(args[0]), args[1:]
    out: list[str] = []
    used = 0
    i = 0
    while i < len(spec):
        if spec[i] != "%":
            out.append(spec[i])
            i += 1
            continue
        j = i + 1
        while j < len(spec) and spec[j] in "-+# 0":
            j += 1
        while j < len(spec) and (spec[j].isdigit() or spec[j] == "."):
            j += 1
        if j >= len(spec):
            raise _Unresolved("format(): unterminated verb")
        flags, verb = spec[i + 1 : j], spec[j]
        i = j + 1
        if verb == "%" and not flags:
            out.append("%")
            continue
        if used >= len(values):
            raise _Unresolved("format(): not enough arguments")
        out.append(_format_verb(flags, verb, values[used]))
        used += 1
    if used != len(values):
        raise _Unresolved("format(): too many arguments")
    return "".join(out)


def _format_verb(flags: str, verb: str, value: Any) -> str:
    if verb in ("s", "v"):
        # %v of a list or map prints it as JSON, like cty.
        compound = isinstance(value, (list, dict))
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":")) if compound else _to_str(value)
        return f"%{flags}s" % text
    if verb == "q":
        return f"%{flags}s" % json.dumps(_to_str(value), ensure_ascii=False)
    if verb == "t":
        return f"%{flags}s" % _to_str(_to_bool(value))
    if verb == "d":
        return f"%{flags}d" % _to_int(value)
    if verb == "f":
        return f"%{flags}f" % float(_to_number(value))
    raise _Unresolved(f"format(): verb %{verb} is not supported")


def _str_fn(impl: Callable[..., Any]) -> Callable[[_Scope, list[Any]], Any]:
    """Wrap a plain string function: every argument converted to a string first."""
    return lambda scope, args: impl(*(_to_str(arg) for arg in args))


def _trimprefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def _trimsuffix(text: str, suffix: str) -> str:
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


# name -> (min args, max args or None, implementation)
_FUNCTIONS: dict[str, tuple[int, int | None, Callable[[_Scope, list[Any]], Any]]] = {
    "abspath": (1, 1, _fn_abspath),
    "basename": (1, 1, _fn_basename),
    "dirname": (1, 1, _fn_dirname),
    "pathexpand": (1, 1, _fn_pathexpand),
    "env": (1, 1, _fn_env),
    "format": (1, None, _fn_format),
    "join": (2, None, _fn_join),
    "concat": (1, None, _fn_concat),
    "split": (2, 2, _fn_split),
    "coalesce": (1, None, _fn_coalesce),
    "lower": (1, 1, _str_fn(str.lower)),
    "upper": (1, 1, _str_fn(str.upper)),
    "replace": (3, 3, _str_fn(str.replace)),  # Packer 1.6: plain text, no /regex/
    "trimprefix": (2, 2, _str_fn(_trimprefix)),
    "trimsuffix": (2, 2, _str_fn(_trimsuffix)),
    "trimspace": (1, 1, _str_fn(str.strip)),
    "length": (1, 1, _fn_length),
    "lookup": (2, 3, _fn_lookup),
    "merge": (0, None, _fn_merge),
    "tostring": (1, 1, lambda scope, args: _to_str(args[0])),
    "tonumber": (1, 1, lambda scope, args: _to_number(args[0])),
}
