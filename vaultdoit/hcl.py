"""Packer HCL2 templates -> PackerConfig. The only module that imports python-hcl2.

python-hcl2 returns every non-literal as ``"${...}"`` text, so this module
carries a small evaluator for the part of HCL that the stage graph needs:
references (var, local, path, source), string templates, lists, a few
operators and the Packer functions real templates use in paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from vaultdoit.errors import TemplateError
from vaultdoit.model import PackerConfig, PackerSource, Provisioner

OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)

# Attributes the graph needs: they must resolve, or the template is rejected.
GRAPH_ATTRS = ("iso_url", "iso_checksum", "output_directory", "vm_name", "disk_image",
               "use_backing_file", "format", "disk_size", "qemuargs")
PROVISIONER_ATTRS = ("playbook_file", "extra_arguments")
PROVISIONER_TYPES = ("ansible", "ansible-local")


_LONE_VAR = re.compile(r"\$\{var\.([A-Za-z_][A-Za-z0-9_-]*)\}")


class Unresolvable(Exception):
    """An expression refers to something we cannot know before Packer runs."""


# ----------------------------------------------------------------------------- parsing files


def parse_file(path: Path) -> dict[str, Any]:
    """One HCL file as python-hcl2's plain dict, or a TemplateError with the position."""
    try:
        with path.open() as fh:
            return hcl2.load(fh, serialization_options=OPTIONS)
    except OSError as exc:
        raise TemplateError(f"cannot read: {exc.strerror}", file=path) from None
    except Exception as exc:  # lark's UnexpectedInput and friends
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        where = f" at line {line}, column {column}" if line else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r" at line \d+, column \d+\.?$", "", first)
        raise TemplateError(f"HCL syntax error{where}: {first}", file=path,
                            hint="check the template with `packer validate`") from None


# ----------------------------------------------------------------------------- expressions


def _split_template(text: str) -> list[tuple[bool, str]]:
    """Split a string into literal parts and ``${...}`` expressions (brace and quote aware)."""
    parts: list[tuple[bool, str]] = []
    i, start = 0, 0
    while i < len(text):
        if text.startswith("$${", i):  # escaped: a literal "${"
            parts.append((False, text[start:i] + "${"))
            i += 3
            start = i
            continue
        if text.startswith("${", i):
            if i > start:
                parts.append((False, text[start:i]))
            end = _match_brace(text, i + 2)
            parts.append((True, text[i + 2:end]))
            i = end + 1
            start = i
            continue
        i += 1
    if start < len(text):
        parts.append((False, text[start:]))
    return parts


def _match_brace(text: str, i: int) -> int:
    """Index of the ``}`` closing the expression that starts at ``i``."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _skip_string(text, i)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise Unresolvable(f"unclosed ${{ in {text!r}")


def _skip_string(text: str, i: int) -> int:
    """Index just past the quoted string starting at ``i`` (which may hold ``${...}``)."""
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        if text.startswith("${", i):
            i = _match_brace(text, i + 2) + 1
            continue
        i += 1
    raise Unresolvable(f"unclosed string in {text!r}")


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    | (?P<op>==|!=|&&|\|\||>=|<=|[()\[\],.?:!<>+\-*/%])
    | (?P<str>")
    )""", re.X)


class _Parser:
    """Recursive-descent evaluator of one HCL expression."""

    def __init__(self, text: str, scope: "Scope") -> None:
        self.text = text
        self.i = 0
        self.scope = scope

    def fail(self, why: str = "") -> Unresolvable:
        return Unresolvable(why or f"unsupported expression {self.text!r}")

    def peek(self) -> tuple[str, str] | None:
        m = _TOKEN.match(self.text, self.i)
        if not m or m.end() == self.i and not m.lastgroup:
            return None
        kind = m.lastgroup or ""
        return kind, m.group(kind)

    def take(self) -> tuple[str, str]:
        m = _TOKEN.match(self.text, self.i)
        if not m or not m.lastgroup:
            raise self.fail()
        self.i = m.end()
        return m.lastgroup, m.group(m.lastgroup)

    def accept(self, op: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] == op:
            self.take()
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise self.fail()

    def parse(self) -> Any:
        value = self.conditional()
        if self.text[self.i:].strip():
            raise self.fail()
        return value

    def conditional(self) -> Any:
        cond = self.binary(0)
        if self.accept("?"):
            yes = self.conditional()
            self.expect(":")
            no = self.conditional()
            return yes if cond else no
        return cond

    LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!="), (">", "<", ">=", "<="),
                                           ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            tok = self.peek()
            if not (tok and tok[0] == "op" and tok[1] in self.LEVELS[level]):
                return left
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _apply(op, left, right)

    def unary(self) -> Any:
        if self.accept("!"):
            return not self.unary()
        if self.accept("-"):
            return -self.unary()
        return self.postfix(self.primary())

    def postfix(self, value: Any) -> Any:
        while True:
            if self.accept("["):
                key = self.conditional()
                self.expect("]")
                try:
                    value = value[key]
                except (KeyError, IndexError, TypeError):
                    raise self.fail(f"no element {key!r}") from None
            elif self.peek() == ("op", ".") and isinstance(value, dict):
                self.take()
                kind, name = self.take()
                if kind != "name" or name not in value:
                    raise self.fail(f"no attribute {name!r}")
                value = value[name]
            else:
                return value

    def primary(self) -> Any:
        kind, tok = self.take()
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        if kind == "str":
            end = _skip_string(self.text, self.i - 1)
            raw = self.text[self.i:end - 1]
            self.i = end
            return self.scope.template(_unescape(raw))
        if kind == "op" and tok == "(":
            value = self.conditional()
            self.expect(")")
            return value
        if kind == "op" and tok == "[":
            items = []
            while not self.accept("]"):
                items.append(self.conditional())
                if not self.accept(","):
                    self.expect("]")
                    break
            return items
        if kind == "name":
            if tok in ("true", "false"):
                return tok == "true"
            if tok == "null":
                return None
            if self.accept("("):
                args = []
                while not self.accept(")"):
                    args.append(self.conditional())
                    if not self.accept(","):
                        self.expect(")")
                        break
                return self.scope.call(tok, args)
            return self.reference(tok)
        raise self.fail()

    def reference(self, root: str) -> Any:
        self.expect(".")
        kind, attr = self.take()
        if kind != "name":
            raise self.fail()
        return self.scope.lookup(root, attr)


def _unescape(raw: str) -> str:
    return raw.replace('\\"', '"').replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")


def _apply(op: str, a: Any, b: Any) -> Any:
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "||": lambda x, y: x or y, "&&": lambda x, y: x and y, "==": lambda x, y: x == y,
        "!=": lambda x, y: x != y, ">": lambda x, y: x > y, "<": lambda x, y: x < y,
        ">=": lambda x, y: x >= y, "<=": lambda x, y: x <= y, "+": lambda x, y: x + y,
        "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x / y,
        "%": lambda x, y: x % y,
    }
    try:
        return ops[op](a, b)
    except TypeError:
        raise Unresolvable(f"cannot apply {op} to {a!r} and {b!r}") from None


def _format(fmt: str, *args: Any) -> str:
    """Packer's format(): %s %d %v %q and %%."""
    values = iter(args)

    def sub(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb == "q":
            return f'"{value}"'
        if verb == "d":
            return str(int(value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    return re.sub(r"%([sdvq%])", sub, fmt)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "basename": lambda p: os.path.basename(p),
    "dirname": lambda p: os.path.dirname(p),
    "pathexpand": lambda p: os.path.expanduser(p),
    "format": _format,
    "join": lambda sep, items: sep.join(str(i) for i in items),
    "concat": lambda *lists: [x for lst in lists for x in lst],
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "replace": lambda s, old, new: s.replace(old, new),
    "trimsuffix": lambda s, suf: s[: -len(suf)] if suf and s.endswith(suf) else s,
    "trimprefix": lambda s, pre: s[len(pre):] if s.startswith(pre) else s,
    "split": lambda sep, s: s.split(sep),
    "coalesce": lambda *xs: next((x for x in xs if x not in (None, "")), None),
    "tostring": lambda x: str(x),
    "tonumber": lambda x: float(x) if "." in str(x) else int(x),
    "length": lambda x: len(x),
}


class Scope:
    """What references can see: variables, locals, path.*, source.name."""

    def __init__(self, *, variables: Mapping[str, Any], local_exprs: Mapping[str, Any],
                 root: Path, cwd: Path, source_name: str | None = None, allow_env: bool = False) -> None:
        self.variables = variables
        self.local_exprs = local_exprs
        self.root = root
        self.cwd = cwd
        self.source_name = source_name
        self.allow_env = allow_env
        self._locals: dict[str, Any] = {}
        self._resolving: set[str] = set()

    def with_source(self, name: str) -> "Scope":
        scope = Scope(variables=self.variables, local_exprs=self.local_exprs, root=self.root,
                      cwd=self.cwd, source_name=name)
        scope._locals = self._locals
        return scope

    def lookup(self, root: str, attr: str) -> Any:
        if root == "var":
            if attr not in self.variables:
                raise Unresolvable(f"undeclared variable var.{attr}")
            return self.variables[attr]
        if root == "local":
            return self.local(attr)
        if root == "path" and attr == "root":
            return str(self.root)
        if root == "path" and attr == "cwd":
            return str(self.cwd)
        if root == "source" and attr == "name" and self.source_name is not None:
            return self.source_name
        raise Unresolvable(f"{root}.{attr} is not known before the build runs")

    def local(self, name: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        if name not in self.local_exprs:
            raise Unresolvable(f"undeclared local.{name}")
        if name in self._resolving:
            raise Unresolvable(f"local.{name} refers to itself")
        self._resolving.add(name)
        try:
            value = self.evaluate(self.local_exprs[name])
        finally:
            self._resolving.discard(name)
        self._locals[name] = value
        return value

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "env" and self.allow_env:
            return os.environ.get(str(args[0]), "")
        if name == "abspath" and len(args) == 1:
            # Packer resolves relative paths against its working directory.
            return os.path.normpath(os.path.join(self.cwd, str(args[0])))
        func = FUNCTIONS.get(name)
        if func is None:
            raise Unresolvable(f"function {name}() is not supported")
        try:
            return func(*args)
        except (TypeError, ValueError, StopIteration) as exc:
            raise Unresolvable(f"{name}(): {exc}") from None

    def template(self, text: str) -> Any:
        """A string that may hold ``${...}``: a lone expression keeps its type."""
        if "${" not in text:
            return text
        parts = _split_template(text)
        if len(parts) == 1 and parts[0][0]:
            return _Parser(parts[0][1], self).parse()
        out = []
        for is_expr, chunk in parts:
            if is_expr:
                value = _Parser(chunk, self).parse()
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
            else:
                out.append(chunk)
        return "".join(out)

    def evaluate(self, value: Any) -> Any:
        """Resolve a python-hcl2 value (strings, lists, dicts of them)."""
        if isinstance(value, str):
            if value.startswith("<<"):
                return _heredoc(value)
            return self.template(value)
        if isinstance(value, list):
            return [self.evaluate(v) for v in value]
        if isinstance(value, dict):
            return {k: self.evaluate(v) for k, v in value.items()}
        return value


def _heredoc(text: str) -> str:
    lines = text.splitlines()
    body = lines[1:-1]
    if lines[0].startswith("<<-"):
        indent = min((len(line) - len(line.lstrip()) for line in body if line.strip()), default=0)
        body = [line[indent:] for line in body]
    return "\n".join(body) + "\n"


# ----------------------------------------------------------------------------- the folder


def _blocks(doc: dict[str, Any], kind: str) -> list[Any]:
    value = doc.get(kind, [])
    return value if isinstance(value, list) else [value]


def _variables(docs: list[tuple[Path, dict[str, Any]]], var_docs: list[tuple[Path, dict[str, Any]]],
               overrides: Mapping[str, Any], root: Path, cwd: Path) -> dict[str, Any]:
    env_scope = Scope(variables={}, local_exprs={}, root=root, cwd=cwd, allow_env=True)
    values: dict[str, Any] = {}
    for path, doc in docs:
        for block in _blocks(doc, "variable"):
            for name, body in block.items():
                body = body or {}
                if "default" in body:
                    try:
                        values[name] = env_scope.evaluate(body["default"])
                    except Unresolvable as exc:
                        raise TemplateError(f'variable "{name}": cannot resolve default: {exc}', file=path,
                                            hint="use a literal default") from None
                else:
                    values.setdefault(name, None)
    for path, doc in var_docs:
        for name, value in doc.items():
            if name in values:
                try:
                    values[name] = env_scope.evaluate(value)
                except Unresolvable as exc:
                    raise TemplateError(f"{name}: cannot resolve: {exc}", file=path,
                                        hint="variable files hold literal values") from None
    for name, value in overrides.items():
        if name in values:
            values[name] = value
    return values


def _locals(docs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    exprs: dict[str, Any] = {}
    for _path, doc in docs:
        for block in _blocks(doc, "locals"):
            exprs.update(block)
        for block in _blocks(doc, "local"):
            for name, body in block.items():
                exprs[name] = (body or {}).get("expression")
    return exprs


def _resolve_attrs(attrs: dict[str, Any], scope: Scope, *, file: Path, what: str,
                   required: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in attrs.items():
        try:
            out[key] = scope.evaluate(raw)
        except Unresolvable:
            if key in required:
                raise TemplateError(f"{what}: cannot resolve {key} = {raw}", file=file,
                                    hint="use a literal, var.*, local.*, path.root or a supported function") from None
            out[key] = raw  # not needed by the graph: keep the text (it still counts in the cache key)
    return out


def load_packer_dir(directory: Path, *, cwd: Path, var_files: Sequence[Path] = (),
                    overrides: Mapping[str, Any] | None = None) -> PackerConfig:
    """Read a template folder as ``packer build DIR`` loads it."""
    directory = directory.resolve()
    files = sorted(directory.glob("*.pkr.hcl"))
    docs = [(path, parse_file(path)) for path in files]
    auto = sorted(directory.glob("*.auto.pkrvars.hcl"))
    explicit = [Path(p).resolve() for p in var_files]
    for path in explicit:
        if not path.is_file():
            raise TemplateError("variable file not found", file=path, hint="fix var_files in vault.toml")
    var_docs = [(path, parse_file(path)) for path in [*auto, *explicit]]
    variables = _variables(docs, var_docs, overrides or {}, directory, cwd)
    scope = Scope(variables=variables, local_exprs=_locals(docs), root=directory, cwd=cwd)

    sources: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, doc in docs:
        for block in _blocks(doc, "source"):
            for kind, named in block.items():
                if kind != "qemu":
                    continue
                for name, body in named.items():
                    if name in sources:
                        raise TemplateError(f'source "qemu" "{name}" is defined twice', file=path,
                                            hint="give every source a unique name")
                    sources[name] = (path, body or {})

    built: list[PackerSource] = []
    for path, doc in docs:
        for build in _blocks(doc, "build"):
            built.extend(_build_sources(build, path, sources, scope, cwd))
    names = [s.name for s in built]
    for name in names:
        if names.count(name) > 1:
            source = next(s for s in built if s.name == name)
            raise TemplateError(f'two builds produce a qemu source named "{name}"', file=source.file,
                                hint='set a distinct name = "..." in each build\'s source block')
    return PackerConfig(directory=directory, files=tuple(files),
                        var_files=tuple([*auto, *explicit]), variables=variables, sources=tuple(built))


def _build_sources(build: dict[str, Any], path: Path, sources: dict[str, tuple[Path, dict[str, Any]]],
                   scope: Scope, cwd: Path) -> list[PackerSource]:
    if "dynamic" in build:
        raise TemplateError('build: "dynamic" blocks are not supported by vaultdoit', file=path,
                            hint="write one source block per stage")
    build_name = build.get("name")
    label = f'build "{build_name}"' if build_name else "build"
    # (source reference, override attributes)
    refs: list[tuple[str, dict[str, Any]]] = [(str(r), {}) for r in build.get("sources", []) or []]
    for block in _blocks(build, "source"):
        for ref, body in block.items():
            refs.append((ref, dict(body or {})))
    result = []
    for ref, override in refs:
        parts = ref.split(".")
        if len(parts) != 3 or parts[0] != "source":
            raise TemplateError(f'{label}: "{ref}" is not a source reference', file=path,
                                hint='write sources as "source.<type>.<name>"')
        if parts[1] != "qemu":
            continue
        if parts[2] not in sources:
            raise TemplateError(f'{label}: no source "qemu" "{parts[2]}" for {ref}', file=path,
                                hint="define the source block or fix the reference")
        src_file, body = sources[parts[2]]
        name = str(override.pop("name", parts[2]))
        local_scope = scope.with_source(name)
        what = f'source "qemu" "{name}"'
        attrs = {**body, **override}
        resolved = _resolve_attrs(attrs, local_scope, file=path if override else src_file, what=what,
                                  required=GRAPH_ATTRS)
        resolved.setdefault("output_directory", f"output-{name}")
        resolved.setdefault("vm_name", f"packer-{name}")
        provisioners = []
        for block in _blocks(build, "provisioner"):
            for ptype, pbody in block.items():
                presolved = _resolve_attrs(dict(pbody or {}), local_scope, file=path,
                                           what=f'{label}: provisioner "{ptype}"',
                                           required=PROVISIONER_ATTRS if ptype in PROVISIONER_TYPES else ())
                playbook = presolved.get("playbook_file") if ptype in PROVISIONER_TYPES else None
                playbook_path = None
                if playbook:
                    playbook_path = Path(os.path.normpath(cwd / str(playbook)))
                extra = presolved.get("extra_arguments") or []
                provisioners.append(Provisioner(
                    type=ptype, playbook_file=playbook_path,
                    extra_arguments=tuple(str(a) for a in extra),
                    settings={k: v for k, v in presolved.items() if k not in ("playbook_file", "extra_arguments")},
                ))
        attr_vars = {key: m.group(1) for key in ("iso_url", "iso_checksum")
                     if isinstance(attrs.get(key), str) and (m := _LONE_VAR.fullmatch(attrs[key]))}
        result.append(PackerSource(name=name, file=src_file, attrs=resolved,
                                   provisioners=tuple(provisioners), build_name=build_name,
                                   attr_vars=attr_vars))
    return result
