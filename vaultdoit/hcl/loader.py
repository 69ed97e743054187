"""Packer's loading rules: a folder of templates, its variables, locals, sources, builds
and provisioners, read the way ``packer build DIR`` reads them.

Values the stage graph needs (``SOURCE_GRAPH_ATTRS``, a playbook's path) must resolve,
or loading fails naming the real cause at ``file:line``. Every other attribute is
resolved as far as it can be: what cannot be known before the build becomes a
:class:`vaultdoit.model.Unknown`, never silently kept raw text.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdoit.errors import TemplateError
from vaultdoit.hcl.evaluate import (
    Effects, EvalError, GetAttr, ListExpr, MissingFile, Name, Namespace, Node, ObjectExpr, Scope, Template,
    Unresolved,
    clip, object_key, to_bool, to_list, to_str,
)
from vaultdoit.hcl.functions import FUNCTIONS, TypeSpec, convert, type_spec
from vaultdoit.hcl.syntax import Attribute, Block, Body, HCLSyntaxError, parse_expression, read_file
from vaultdoit.model import MISSING_YET, PackerConfig, PackerSource, Provisioner, Unknown

__all__ = ["load_packer_dir", "SOURCE_GRAPH_ATTRS", "STABLE_ATTRS", "PROVISIONER_GRAPH_ATTRS", "ANSIBLE_TYPES",
           "UNSET_HINT"]

# Source attributes the stage graph depends on: these must resolve, or loading fails.
SOURCE_GRAPH_ATTRS = (
    "iso_url",
    "iso_urls",
    "iso_checksum",
    "output_directory",
    "vm_name",
    "disk_image",
    "use_backing_file",
    "format",
    "disk_size",
    "qemuargs",
)
# Paths: a value that changes from run to run (timestamp()...) is refused here.
STABLE_ATTRS = ("iso_url", "iso_urls", "output_directory", "vm_name", "playbook_file")
PROVISIONER_GRAPH_ATTRS = ("playbook_file", "extra_arguments")
ANSIBLE_TYPES = ("ansible", "ansible-local")

UNSET_HINT = "set it in vault.toml [variables], a var file, PKR_VAR_{name} or on the command line"
ENV_PREFIX = "PKR_VAR_"
MAX_LOCAL_DEPTH = 32  # locals using locals using locals...

_STR_ATTRS = ("iso_url", "iso_checksum", "output_directory", "vm_name", "format")
_BOOL_ATTRS = ("disk_image", "use_backing_file")
_RESOLVE_HINT = "use a literal, a variable, a local or a supported function"
_DYNAMIC_HINT = "write the blocks out: vaultdoit reads each stage's settings before the build"
_SELECTION = ("only", "except")  # choose where a provisioner runs; not a setting of the image


def load_packer_dir(
    directory: Path,
    *,
    cwd: Path,
    var_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> PackerConfig:
    """Load every ``*.pkr.hcl`` of ``directory`` with its variables, as ``packer build DIR`` would.

    Variable values, lowest priority first: the template's defaults, ``*.auto.pkrvars.hcl``
    of the folder (sorted), ``defaults`` (vault.toml), ``var_files`` in the given order,
    ``PKR_VAR_<name>`` in ``env`` (default: ``os.environ``), then ``overrides`` (the command
    line). A string for a list, map or object variable is HCL text, as with ``-var``.
    Relative paths (``directory``, ``var_files``) are taken relative to ``cwd``.
    Raises :class:`TemplateError` naming ``file:line`` for anything Packer would refuse that
    matters here, and for graph attributes (``SOURCE_GRAPH_ATTRS``) that cannot be resolved.
    """
    folder = _Folder(directory, cwd=cwd, var_files=var_files, overrides=overrides, defaults=defaults, env=env)
    sources = _Builds(folder.bodies, folder.scope).sources()
    variables = folder.variables
    return PackerConfig(
        directory=folder.root,
        files=tuple(folder.templates),
        var_files=folder.var_files,
        variables=variables.final(),
        sources=tuple(sources),
        sensitive=frozenset(v.name for v in variables.declared.values() if v.sensitive),
        assigned=frozenset(variables.assigned),
    )


class _Folder:
    """A template folder parsed, its variables assigned and its locals ready to evaluate."""

    def __init__(self, directory: Path, *, cwd: Path, var_files: Sequence[Path] = (),
                 overrides: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        cwd_abs = os.path.normpath(os.path.join(os.getcwd(), str(cwd)))
        self.root = Path(os.path.normpath(os.path.join(cwd_abs, str(directory))))
        self.templates, auto_var_files = _list_folder(self.root)
        explicit = [Path(os.path.normpath(os.path.join(cwd_abs, str(p)))) for p in var_files]
        self.var_files = (*auto_var_files, *explicit)
        environment = os.environ if env is None else env

        self.bodies = [(path, read_file(path)) for path in self.templates]
        variables = self.variables = _Variables(str(self.root), cwd_abs, environment)
        for _path, body in self.bodies:
            variables.declare(body)
        for path in auto_var_files:
            variables.assign_file(path)
        variables.assign_all(defaults or {}, "vault.toml [variables]")
        for path in explicit:
            variables.assign_file(path)
        # One lookup per declared variable (Packer ignores PKR_VAR_ of undeclared ones), never a scan
        # of the whole environment: the plan cache then depends on these variables only.
        variables.assign_all({name: environment[ENV_PREFIX + name] for name in variables.declared
                              if ENV_PREFIX + name in environment}, ENV_PREFIX)
        variables.assign_all(overrides or {}, "-var")

        self.locals = _Locals(self.bodies)
        self.scope = Scope(functions=FUNCTIONS, base_dir=str(self.root), cwd=cwd_abs, namespaces={
            "var": Namespace("var", variables.get),
            "local": Namespace("local", self.locals.get),
            "path": Namespace("path", _path_namespace(str(self.root), cwd_abs)),
            "data": Namespace("data", _data_source),
            "packer": Namespace("packer", _at_run_time("packer")),
        })
        self.locals.scope = self.scope

    def local(self, name: str) -> Any:
        """The value of ``local.<name>`` (raises Unresolved or EvalError)."""
        return self.locals.get(name, self.scope.with_effects(Effects()))


# ---------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------


def _list_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """The templates and auto var files Packer loads from a folder (not recursive)."""
    if not root.is_dir():
        raise TemplateError("template folder not found", file=root,
                            hint="point the stage at a folder of *.pkr.hcl files")
    names = sorted(entry.name for entry in root.iterdir() if entry.is_file())
    json_files = [n for n in names if n.endswith((".pkr.json", ".pkrvars.json"))]
    if json_files:
        # Packer would load these too; ignoring them would give a wrong graph.
        raise TemplateError("JSON-syntax templates are not supported", file=f"{root / json_files[0]}:1",
                            hint="rewrite it as *.pkr.hcl")
    templates = [root / n for n in names if n.endswith(".pkr.hcl")]
    if not templates:
        raise TemplateError("no *.pkr.hcl template in the folder", file=root,
                            hint="add the Packer templates of the stage")
    return templates, [root / n for n in names if n.endswith(".auto.pkrvars.hcl")]


def _did_you_mean(name: str, known: Sequence[str], prefix: str) -> str | None:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {prefix}{close[0]}?" if close else None


# ---------------------------------------------------------------------------
# Variables
# ---------------------------------------------------------------------------

_MISSING: Any = object()


@dataclass
class _Variable:
    name: str
    where: str  # file:line of the declaration
    type: TypeSpec | None
    parse_text: bool  # a string from -var / PKR_VAR_ / vault.toml is HCL text, not a string value
    sensitive: bool = False
    value: Any = _MISSING
    missing: Unresolved | None = None  # why there is no value
    effects: Effects = field(default_factory=Effects)


class _Variables:
    """Declared input variables and the values assigned to them, in priority order."""

    def __init__(self, root: str, cwd: str, env: Mapping[str, str]) -> None:
        self.declared: dict[str, _Variable] = {}
        self.assigned: set[str] = set()
        # Defaults may call functions (env() included), never refer to other values.
        self.default_scope = Scope(functions=FUNCTIONS, base_dir=root, cwd=cwd, env=env)
        # Var files and -var values are literal values (Packer evaluates them with no context).
        self.literal_scope = Scope(functions={}, base_dir=root, cwd=cwd)

    def declare(self, body: Body) -> None:
        for block in body.blocks_of("variable"):
            if len(block.labels) != 1:
                raise TemplateError("a variable block takes one label, its name", file=block.where,
                                    hint='write variable "name" { ... }')
            self._declare(block.labels[0], block.body.attributes, block.where)
        for block in body.blocks_of("variables"):  # the older form: name = default
            for attr in block.body.attributes.values():
                self._declare(attr.name, {"default": attr}, attr.loc.where)

    def _declare(self, name: str, attrs: Mapping[str, Attribute], where: str) -> None:
        if name in self.declared:
            raise TemplateError(f'variable "{name}" is declared twice (also at {self.declared[name].where})',
                                file=where, hint="keep one declaration")
        declared_type: TypeSpec | None = None
        if "type" in attrs:
            try:
                declared_type = type_spec(attrs["type"].expr)
            except EvalError as exc:
                raise TemplateError(f'variable "{name}": {exc.message}', file=attrs["type"].loc.where,
                                    hint="write a type such as string, number, list(string)") from None
        variable = _Variable(name, where, declared_type, parse_text=False)
        variable.sensitive = "sensitive" in attrs and self._flag(attrs["sensitive"], name)
        self.declared[name] = variable
        if "default" not in attrs:
            variable.missing = self._unset(name)
        else:
            node = attrs["default"].expr
            try:
                value = node.ev(self.default_scope.with_effects(variable.effects))
                variable.value = convert(value, declared_type) if declared_type else value
            except Unresolved as exc:
                # Only an error if something the graph needs uses it.
                variable.missing = Unresolved(f'the default of variable "{name}": {exc.reason}', hint=exc.hint)
            except EvalError as exc:
                raise TemplateError(f'variable "{name}": default: {exc.message}', file=exc.where or node.loc.where,
                                    hint=exc.hint or "fix the default value") from None
        # As Packer: without a type, the default's type is the variable's (a number default
        # makes "-var x=5" the number 5), and a string given on the command line is HCL text
        # only for list, map, object and bool variables.
        kind = declared_type.kind if declared_type else _kind_of(variable.value)
        if declared_type is None and kind in ("string", "number", "bool"):
            variable.type = TypeSpec(kind)
        variable.parse_text = kind not in ("string", "number", "any")

    def _flag(self, attr: Attribute, name: str) -> bool:
        try:
            return to_bool(attr.expr.ev(self.literal_scope))
        except (Unresolved, EvalError):
            raise TemplateError(f'variable "{name}": {attr.name} must be true or false', file=attr.loc.where,
                                hint=f"write {attr.name} = true") from None

    @staticmethod
    def _unset(name: str) -> Unresolved:
        return Unresolved(f'variable "{name}" has no value', hint=UNSET_HINT.format(name=name))

    def assign_file(self, path: Path) -> None:
        """Values from a ``*.pkrvars.hcl``; undeclared names only warn in Packer."""
        body = read_file(path)
        if body.blocks:
            block = body.blocks[0]
            raise TemplateError(f'a var file assigns values; "{block.type}" blocks belong in *.pkr.hcl',
                                file=block.where, hint="write name = value")
        for name, attr in body.attributes.items():
            variable = self.declared.get(name)
            if variable is None:
                continue
            try:
                value = attr.expr.ev(self.literal_scope)
            except (Unresolved, EvalError):
                raise TemplateError(f'variable "{name}": cannot resolve value = {clip(attr.expr.loc.text)}',
                                    file=attr.loc.where, hint="var files take literal values only") from None
            self._set(variable, value, attr.loc.where, f"variable {name}")

    def assign_all(self, values: Mapping[str, Any], origin: str) -> None:
        """Values from vault.toml, the environment or the command line (undeclared names are skipped)."""
        for name, raw in values.items():
            variable = self.declared.get(name)
            if variable is None:
                continue
            label = f"{origin}{name}" if origin == ENV_PREFIX else f"{origin} {name}"
            value = raw
            if isinstance(raw, str) and variable.parse_text:
                try:
                    value = parse_expression(raw, f"<{label}>").ev(self.literal_scope)
                except (HCLSyntaxError, Unresolved, EvalError) as exc:
                    problem = getattr(exc, "message", None) or getattr(exc, "reason", str(exc))
                    raise TemplateError(f"{label}={clip(repr(raw), 80)}: not a valid value ({problem})",
                                        file=variable.where, hint=f"give a {variable.type or 'HCL'} value") from None
            self._set(variable, value, variable.where, f"{label}={clip(repr(raw), 80)}")

    def _set(self, variable: _Variable, value: Any, where: str, label: str) -> None:
        try:
            variable.value = convert(value, variable.type) if variable.type else value
        except EvalError as exc:
            raise TemplateError(f"{label}: {exc.message}", file=where,
                                hint=f"give a {variable.type} value") from None
        variable.missing = None
        variable.effects = Effects()
        self.assigned.add(variable.name)

    def get(self, name: str, scope: Scope) -> Any:
        """``var.<name>`` (the namespace lookup)."""
        variable = self.declared.get(name)
        if variable is None:
            raise EvalError(f'no variable "{name}" is declared',
                            hint=_did_you_mean(name, list(self.declared), "var.") or "declare it in a variable block")
        scope.effects.merge(variable.effects)
        if variable.missing is not None:
            raise variable.missing.with_traceback(None)  # raised again and again: no growing traceback
        return variable.value

    def final(self) -> dict[str, Any]:
        """Every declared variable's value; None for one that has none."""
        return {name: (None if v.missing else v.value) for name, v in sorted(self.declared.items())}


def _kind_of(value: Any) -> str:
    if value is _MISSING or value is None:
        return "any"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


# ---------------------------------------------------------------------------
# Locals and other names
# ---------------------------------------------------------------------------


class _Locals:
    """Locals evaluated on first use (their order does not matter), each with its effects."""

    def __init__(self, bodies: Sequence[tuple[Path, Body]]) -> None:
        self.nodes: dict[str, Attribute] = {}
        for _path, body in bodies:
            for block in body.blocks_of("locals"):
                for attr in block.body.attributes.values():
                    self._add(attr.name, attr)
            for block in body.blocks_of("local"):
                name = block.labels[0] if block.labels else ""
                expression = block.body.attributes.get("expression")
                if expression is None:
                    raise TemplateError(f'local "{name}" has no expression', file=block.where,
                                        hint="add `expression = ...`")
                self._add(name, expression)
        self.scope: Scope | None = None
        self.done: dict[str, tuple[Any, Effects]] = {}
        self.active: list[str] = []

    def _add(self, name: str, attr: Attribute) -> None:
        if name in self.nodes:
            raise TemplateError(f'local "{name}" is defined twice (also at {self.nodes[name].loc.where})',
                                file=attr.loc.where, hint="keep one definition")
        self.nodes[name] = attr

    def get(self, name: str, scope: Scope) -> Any:
        """``local.<name>``: its value, and the files it read counted for the caller too."""
        if name not in self.done:
            self.done[name] = self._evaluate(name)
        outcome, effects = self.done[name]
        scope.effects.merge(effects)
        if isinstance(outcome, (Unresolved, EvalError)):
            raise outcome.with_traceback(None)  # raised again for every use: no growing traceback
        return outcome

    def _evaluate(self, name: str) -> tuple[Any, Effects]:
        if name not in self.nodes:
            raise EvalError(f'no local "{name}" is defined',
                            hint=_did_you_mean(name, list(self.nodes), "local.") or "define it in a locals block")
        if name in self.active:
            cycle = " -> ".join(f"local.{n}" for n in [*self.active[self.active.index(name):], name])
            raise EvalError(f"locals refer to each other in a cycle: {cycle}")
        if len(self.active) >= MAX_LOCAL_DEPTH:
            raise EvalError(f"locals refer to locals more than {MAX_LOCAL_DEPTH} levels deep")
        assert self.scope is not None
        effects = Effects()
        self.active.append(name)
        try:
            outcome: Any = self.nodes[name].expr.ev(self.scope.with_effects(effects))
        except (Unresolved, EvalError) as exc:
            outcome = exc
        finally:
            self.active.pop()
        return outcome, effects


def _path_namespace(root: str, cwd: str) -> Callable[[str, Scope], str]:
    def get(name: str, scope: Scope) -> str:
        if name == "root":
            return root
        if name == "cwd":
            return cwd
        raise EvalError(f"path.{name} does not exist", hint="use path.root or path.cwd")

    return get


def _data_source(name: str, scope: Scope) -> Any:
    raise Unresolved(f'data source "{name}" is read when Packer runs',
                     hint="vaultdoit needs this value before the build: use a literal or a variable")


def _at_run_time(root: str) -> Callable[[str, Scope], Any]:
    def get(name: str, scope: Scope) -> Any:
        raise Unresolved(f"{root}.{name} is only known while Packer runs",
                         hint="use a literal or a variable where vaultdoit needs the value")

    return get


# ---------------------------------------------------------------------------
# Sources and builds
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _SourceBlock:
    type: str
    name: str
    block: Block
    file: Path


@dataclass(frozen=True)
class _Entry:
    """One source a build builds: from its ``sources`` list, or a ``source`` block with overrides."""

    type: str
    name: str
    where: str
    override: Body | None


def _reference(text: str, where: str, build: str) -> tuple[str, str]:
    """``source.qemu.a``, ``sources.qemu.a`` or ``qemu.a`` as (type, name)."""
    parts = text.split(".")
    if len(parts) == 3 and parts[0] in ("source", "sources"):
        parts = parts[1:]
    if len(parts) != 2 or not all(parts):
        raise TemplateError(f'{build}: "{clip(text, 80)}" is not a source reference', file=where,
                            hint='write "source.<type>.<name>"')
    return parts[0], parts[1]


def _traversal(node: Node) -> str | None:
    """``source.qemu.a`` written without quotes, as dotted text."""
    if isinstance(node, Name):
        return node.name
    if isinstance(node, GetAttr):
        head = _traversal(node.target)
        return None if head is None else f"{head}.{node.name}"
    return None


class _Builds:
    """The qemu sources the folder's build blocks build."""

    def __init__(self, bodies: Sequence[tuple[Path, Body]], base: Scope) -> None:
        self.bodies = bodies
        self.base = base
        self.blocks: dict[tuple[str, str], _SourceBlock] = {}
        for path, body in bodies:
            for block in body.blocks_of("source"):
                if len(block.labels) != 2:
                    raise TemplateError("a source block takes two labels, its type and name", file=block.where,
                                        hint='write source "qemu" "name" { ... }')
                key = (block.labels[0], block.labels[1])
                if key in self.blocks:
                    raise TemplateError(f'source "{key[0]}" "{key[1]}" is defined twice '
                                        f"(also at {self.blocks[key].block.where})", file=block.where,
                                        hint="keep one source block per name")
                self.blocks[key] = _SourceBlock(key[0], key[1], block, path)

    def sources(self) -> list[PackerSource]:
        result: list[PackerSource] = []
        seen: dict[str, PackerSource] = {}
        for _path, body in self.bodies:
            for build in body.blocks_of("build"):
                for where, source in self._build(build):
                    if source.name in seen:
                        raise TemplateError(f'two builds produce a qemu source named "{source.name}" '
                                            f"({seen[source.name].only} and {source.only})", file=where,
                                            hint='give one of them another name with `name = "..."` in a source '
                                                 "block inside build")
                    seen[source.name] = source
                    result.append(source)
        return result

    def _build(self, build: Block) -> list[tuple[str, PackerSource]]:
        body = build.body
        build_name = self._build_name(body)
        where = f'build "{build_name}"' if build_name else "build"
        entries = [*self._listed(body, where), *self._blocks(body, where)]
        qemu = []
        for entry in entries:
            block = self.blocks.get((entry.type, entry.name))
            if block is None:
                raise TemplateError(f'{where}: no source "{entry.type}" "{entry.name}" for '
                                    f"source.{entry.type}.{entry.name}", file=entry.where,
                                    hint=f'add a source "{entry.type}" "{entry.name}" block or remove '
                                         f"source.{entry.type}.{entry.name} from the build")
            if block.type == "qemu":
                qemu.append((entry, block))
        dynamic = body.blocks_of("dynamic")
        if dynamic and (qemu or any(self._makes_qemu_sources(d) for d in dynamic)):
            raise TemplateError(f'{where}: "dynamic" blocks are not supported by vaultdoit', file=dynamic[0].where,
                                hint=_DYNAMIC_HINT)
        if not qemu:
            return []  # another builder's build: nothing of it is read further
        label = build_name or ", ".join(f"source.{e.type}.{e.name}" for e, _ in qemu)
        return [(entry.where, _SourceReader(self.base, block, entry, build, build_name, label).read())
                for entry, block in qemu]

    def _makes_qemu_sources(self, dynamic: Block) -> bool:
        """Whether a ``dynamic "source"`` block may make qemu sources (its labels name one, or cannot be read)."""
        if dynamic.labels != ("source",):
            return False
        attr = dynamic.body.attributes.get("labels")
        if attr is None:
            return True
        try:
            labels = to_list(attr.expr.ev(self.base.with_effects(Effects())))
            return any(_reference(to_str(label), attr.loc.where, "build")[0] == "qemu" for label in labels)
        except (Unresolved, EvalError, TemplateError):
            return True

    def _build_name(self, body: Body) -> str | None:
        attr = body.attributes.get("name")
        if attr is None:
            return None
        value = _strict(attr.expr, self.base, "build: name")
        return None if value is None else _as_str(value, "build: name", attr.expr)

    def _listed(self, body: Body, where: str) -> list[_Entry]:
        attr = body.attributes.get("sources")
        if attr is None:
            return []
        items = attr.expr.items if isinstance(attr.expr, ListExpr) else [attr.expr]
        entries = []
        for item in items:
            text = _traversal(item)
            if text is None:
                value = _strict(item, Scope(functions={}, base_dir=self.base.base_dir, cwd=self.base.cwd),
                                f"{where}: sources")
                text = _as_str(value, f"{where}: sources", item)
            entries.append(_Entry(*_reference(text, item.loc.where, where), item.loc.where, None))
        return entries

    def _blocks(self, body: Body, where: str) -> list[_Entry]:
        entries = []
        for block in body.blocks_of("source"):
            if len(block.labels) != 1:
                raise TemplateError(f'{where}: a source block inside build takes one label', file=block.where,
                                    hint='write source "source.qemu.name" { ... }')
            entries.append(_Entry(*_reference(block.labels[0], block.where, where), block.where, block.body))
        return entries


class _SourceReader:
    """One qemu source as one build builds it: overrides applied, values resolved, effects kept."""

    def __init__(self, base: Scope, block: _SourceBlock, entry: _Entry, build: Block, build_name: str | None,
                 label: str) -> None:
        self.block = block
        self.entry = entry
        self.build = build
        self.build_name = build_name
        self.label = label
        self.effects = Effects()
        self.name = block.name
        override = entry.override
        if override is not None and "name" in override.attributes:
            attr = override.attributes["name"]
            value = _strict(attr.expr, base, f'source "qemu" "{block.name}": name')
            self.name = _as_str(value, f'source "qemu" "{block.name}": name', attr.expr)
        self.what = f'source "qemu" "{self.name}"'
        source_ns = {"name": self.name, "type": "qemu"}
        self.scope = Scope(
            functions=base.functions, base_dir=base.base_dir, cwd=base.cwd, effects=self.effects,
            namespaces={**base.namespaces,
                        "source": Namespace("source", lambda n, s: _source_attr(source_ns, n)),
                        "build": Namespace("build", _at_run_time("build"))})

    def read(self) -> PackerSource:
        body = self.block.block.body
        for dynamic in body.blocks_of("dynamic"):
            raise TemplateError(f'{self.what}: "dynamic" blocks are not supported by vaultdoit', file=dynamic.where,
                                hint=_DYNAMIC_HINT)
        # The build's override wins (newer Packer); each node keeps the file it came from.
        merged: dict[str, Attribute] = dict(body.attributes)
        blocks = list(body.blocks)
        if self.entry.override is not None:
            merged.update((k, a) for k, a in self.entry.override.attributes.items() if k != "name")
            blocks += self.entry.override.blocks
        attrs: dict[str, Any] = {}
        for key, attr in merged.items():
            value = self._graph_attr(key, attr.expr) if key in SOURCE_GRAPH_ATTRS else \
                _lenient(attr.expr, self.scope, f"{self.what}: {key}")
            if value is not None:  # null means "not set" in HCL
                attrs[key] = value
        attrs.update(_nested_blocks(blocks, self.scope, self.what))
        attrs.setdefault("output_directory", f"output-{self.name}")
        attrs.setdefault("vm_name", f"packer-{self.name}")
        provisioners = self._provisioners()
        attr_vars = {key: var for key, attr in merged.items() if (var := _lone_variable(attr.expr)) is not None}
        return PackerSource(
            name=self.name,
            file=self.block.file,
            attrs=attrs,
            provisioners=provisioners,
            build_name=self.build_name,
            attr_vars=attr_vars,
            reads=frozenset(Path(p) for p in self.effects.reads),
            where=self.block.block.where,
        )

    def _graph_attr(self, key: str, node: Node) -> Any:
        """A source attribute the graph needs, with the type Packer gives it."""
        what = f"{self.what}: {key}"
        value = _strict(node, self.scope, what, stable=key in STABLE_ATTRS)
        if value is None:
            return None
        try:
            if key in _STR_ATTRS:
                value = to_str(value)
            elif key in _BOOL_ATTRS:
                value = to_bool(value)
            elif key == "iso_urls":
                value = [to_str(v) for v in to_list(value)]
            elif key == "qemuargs":
                value = [[to_str(arg) for arg in to_list(row)] for row in to_list(value)]
        except EvalError as exc:
            raise TemplateError(f"{what}: {exc.message}", file=node.loc.where,
                                hint="qemuargs is a list of lists of strings" if key == "qemuargs" else None) from None
        if key == "iso_url" and value == "":
            raise TemplateError(f"{self.what}: iso_url is empty", file=node.loc.where,
                                hint="set iso_url to the parent stage's image or an ISO")
        return value

    def _provisioners(self) -> tuple[Provisioner, ...]:
        out: list[Provisioner] = []
        for block in self.build.body.blocks_of("provisioner"):
            ptype = block.labels[0] if block.labels else ""
            what = f'build "{self.label}": provisioner "{ptype}"'
            attrs = block.body.attributes
            if not self._runs_here(attrs, what):
                continue
            for dynamic in block.body.blocks_of("dynamic"):
                raise TemplateError(f'{what}: "dynamic" blocks are not supported by vaultdoit', file=dynamic.where,
                                    hint=_DYNAMIC_HINT)
            graph = PROVISIONER_GRAPH_ATTRS if ptype in ANSIBLE_TYPES else ()
            settings = {key: _lenient(attr.expr, self.scope, f"{what}: {key}")
                        for key, attr in attrs.items() if key not in graph and key not in _SELECTION}
            settings = {k: v for k, v in settings.items() if v is not None}
            settings.update(_nested_blocks(list(block.body.blocks), self.scope, what))
            if ptype not in ANSIBLE_TYPES:
                out.append(Provisioner(type=ptype, playbook_file=None, settings=settings, where=block.where))
                continue
            out.append(Provisioner(type=ptype, playbook_file=self._playbook(attrs, what, block),
                                   extra_arguments=self._extra_arguments(attrs, what), settings=settings,
                                   where=block.where))
        return tuple(out)

    def _runs_here(self, attrs: Mapping[str, Attribute], what: str) -> bool:
        """Packer's ``only`` / ``except``: lists of ``<type>.<name>`` source names."""
        names = {f"qemu.{self.name}"}
        if self.build_name:
            names.add(f"{self.build_name}.qemu.{self.name}")
        for key in _SELECTION:
            if key not in attrs:
                continue
            node = attrs[key].expr
            value = _strict(node, self.scope, f"{what}: {key}")
            listed = {_selector(to_str(v)) for v in (to_list(value) if value is not None else [])}
            if key == "only" and listed and not (listed & names):
                return False
            if key == "except" and listed & names:
                return False
        return True

    def _playbook(self, attrs: Mapping[str, Attribute], what: str, block: Block) -> Path:
        """``playbook_file`` as an absolute path (relative ones are relative to Packer's cwd)."""
        attr = attrs.get("playbook_file")
        if attr is None:
            raise TemplateError(f"{what}: playbook_file is not set", file=block.where, hint="set playbook_file")
        text = _as_str(_strict(attr.expr, self.scope, f"{what}: playbook_file", stable=True),
                       f"{what}: playbook_file", attr.expr)
        return Path(os.path.normpath(os.path.join(self.scope.cwd, os.path.expanduser(text))))

    def _extra_arguments(self, attrs: Mapping[str, Attribute], what: str) -> tuple[str, ...]:
        """``extra_arguments`` as strings (numbers and bools become strings, as in Packer)."""
        attr = attrs.get("extra_arguments")
        if attr is None:
            return ()
        value = _strict(attr.expr, self.scope, f"{what}: extra_arguments")
        try:
            return tuple(to_str(arg) for arg in to_list(value or []))
        except EvalError as exc:
            raise TemplateError(f"{what}: extra_arguments: {exc.message}", file=attr.expr.loc.where,
                                hint="extra_arguments is a list of strings") from None


def _source_attr(values: Mapping[str, str], name: str) -> str:
    if name not in values:
        raise EvalError(f"source.{name} does not exist", hint="use source.name or source.type")
    return values[name]


def _selector(text: str) -> str:
    for prefix in ("source.", "sources."):
        if text.startswith(prefix) and text.count(".") >= 2:
            return text[len(prefix):]
    return text


def _lone_variable(node: Node) -> str | None:
    """``X`` when a value is written as just ``var.X`` (so a caller can set it with ``-var``)."""
    if isinstance(node, Template) and len(node.parts) == 1 and isinstance(node.parts[0], Node):
        node = node.parts[0]
    if isinstance(node, GetAttr) and isinstance(node.target, Name) and node.target.name == "var":
        return node.name
    return None


def _nested_blocks(blocks: Sequence[Block], scope: Scope, what: str) -> dict[str, Any]:
    """Blocks inside a source or provisioner, as lists of resolved bodies (labels first)."""
    out: dict[str, list[Any]] = {}
    for block in blocks:
        if block.type == "dynamic":
            continue
        inner = {key: _lenient(attr.expr, scope, f"{what}: {block.type}.{key}")
                 for key, attr in block.body.attributes.items()}
        inner.update(_nested_blocks(block.body.blocks, scope, f"{what}: {block.type}"))
        if block.labels:
            inner = {"labels": list(block.labels), **inner}
        out.setdefault(block.type, []).append(inner)
    return out


# ---------------------------------------------------------------------------
# Evaluation, strict and lenient
# ---------------------------------------------------------------------------


def _strict(node: Node, scope: Scope, what: str, *, stable: bool = False) -> Any:
    """A value that must be known now: anything else is a TemplateError naming the cause."""
    effects = Effects()
    try:
        value = node.ev(scope.with_effects(effects))
    except Unresolved as exc:
        raise TemplateError(f"{what}: {exc.reason}", file=node.loc.where, hint=exc.hint or _RESOLVE_HINT) from None
    except EvalError as exc:
        raise TemplateError(f"{what}: {exc.message}", file=exc.where or node.loc.where, hint=exc.hint) from None
    except RecursionError:
        raise TemplateError(f"{what}: expressions nested too deeply", file=node.loc.where,
                            hint="simplify the expression") from None
    finally:
        scope.effects.merge(effects)
    if stable and effects.volatile:
        used = ", ".join(sorted(effects.volatile))
        raise TemplateError(f"{what} uses {used}, which changes on every run", file=node.loc.where,
                            hint="a build cache needs a stable path: use a fixed name or a variable")
    return value


def _lenient(node: Node, scope: Scope, what: str) -> Any:
    """A value resolved as far as possible; an unknown part becomes an Unknown, per element."""
    if isinstance(node, ListExpr):
        return [_lenient(item, scope, what) for item in node.items]
    if isinstance(node, ObjectExpr):
        try:
            keys = [object_key(key, scope) for key, _ in node.items]
        except Unresolved:
            pass  # the whole map is unknown (below)
        except EvalError as exc:
            raise TemplateError(f"{what}: {exc.message}", file=exc.where or node.loc.where, hint=exc.hint) from None
        else:
            return {k: _lenient(v, scope, f"{what}.{k}") for k, (_, v) in zip(keys, node.items)}
    effects = Effects()
    try:
        return node.ev(scope.with_effects(effects))
    except Unresolved as exc:
        return Unknown(text=node.loc.text, where=node.loc.where, reason=exc.reason, prefix=exc.prefix)
    except MissingFile as exc:
        # Not there yet (a key the build makes) or missing: the stage depends on it, and
        # building the stage says so if it is still missing then; listing works meanwhile.
        effects.reads.add(exc.path)
        return Unknown(text=node.loc.text, where=exc.where or node.loc.where,
                       reason=f"{exc.path}{MISSING_YET}")
    except EvalError as exc:
        raise TemplateError(f"{what}: {exc.message}", file=exc.where or node.loc.where, hint=exc.hint) from None
    except RecursionError:
        raise TemplateError(f"{what}: expressions nested too deeply", file=node.loc.where,
                            hint="simplify the expression") from None
    finally:
        scope.effects.merge(effects)


def _as_str(value: Any, what: str, node: Node) -> str:
    try:
        return to_str(value)
    except EvalError as exc:
        raise TemplateError(f"{what}: {exc.message}", file=node.loc.where) from None

