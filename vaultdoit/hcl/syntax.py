"""HCL text to evaluator nodes: the only module that talks to python-hcl2.

python-hcl2 parses with lark; ``hcl2.parses_to_tree`` (the first half of
``hcl2.parses``) gives the typed parse tree with a position on every node, and this
module maps it one to one onto the nodes of :mod:`vaultdoit.hcl.evaluate`. Template
text that is not inside quotes (heredoc bodies, files read by ``templatefile()``) goes
through the same parser as a quoted string: its literal parts are escaped, its
``${...}`` and ``%{...}`` parts are passed through unchanged.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdoit.errors import TemplateError
from vaultdoit.hcl.evaluate import (
    Binary, Call, Conditional, ForExpr, ForPart, GetAttr, IfPart, Index, ListExpr, Literal, Loc, Name,
    Node, ObjectExpr, Part, Source, Splat, Step, Template, Unary, clip, normal_number,
)

__all__ = ["MAX_FILE_BYTES", "MAX_DEPTH", "Attribute", "Block", "Body", "HCLSyntaxError",
           "read_file", "parse_text", "parse_expression", "parse_template"]

# Parsing runs at about 200 KB/s (lark in pure Python): a bigger template or var file
# is refused before it is read, so hostile input fails fast. The largest real-world
# Packer templates are a few tens of KB.
MAX_FILE_BYTES = 256 * 1024
# Expressions nested deeper than this (brackets, calls, operators) are refused, so
# neither this module nor the evaluator can run out of stack. Real templates stay
# under 15.
MAX_DEPTH = 64

_SYNTAX_HINT = "check the template with `packer validate`"


class HCLSyntaxError(Exception):
    """Text that is not valid HCL; ``line`` counts from 1 in the text's file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    expr: Node
    loc: Loc  # the name of the attribute


@dataclass(frozen=True, slots=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: Body
    loc: Loc  # the block's type name

    @property
    def where(self) -> str:
        return self.loc.where


@dataclass(frozen=True, slots=True)
class Body:
    attributes: dict[str, Attribute]
    blocks: tuple[Block, ...]

    def blocks_of(self, kind: str) -> list[Block]:
        return [block for block in self.blocks if block.type == kind]


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def read_file(path: Path) -> Body:
    """Parse one ``.hcl`` file; every failure is a TemplateError naming ``file:line``."""
    what = "variable file" if path.name.endswith(".pkrvars.hcl") else "file"
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TemplateError(f"the {what} is {size // 1024} KiB, more than the {MAX_FILE_BYTES // 1024} KiB "
                                "vaultdoit reads", file=f"{path}:1", hint="split it or remove generated content")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TemplateError(f"{what} not found", file=path, hint="check the path") from None
    except OSError as exc:
        raise TemplateError(f"cannot read the {what}: {exc.strerror}", file=path,
                            hint="check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TemplateError("not a UTF-8 text file", file=f"{path}:{line}", hint=_SYNTAX_HINT) from None
    try:
        return parse_text(text, str(path))
    except HCLSyntaxError as exc:
        raise TemplateError(exc.message, file=f"{path}:{exc.line}", hint=_SYNTAX_HINT) from None


def parse_text(text: str, path: str) -> Body:
    """Parse HCL text (the contents of ``path``) into a Body; raises HCLSyntaxError."""
    text = text.removeprefix("\ufeff")
    source = Source(path, text)
    tree = _parse_tree(text)
    return _Converter(source).body(tree.children[0])


def parse_expression(text: str, label: str) -> Node:
    """One expression given as text (a ``-var`` value of a list, map or object variable)."""
    body = parse_text(f"value = {text}\n", label)
    if list(body.attributes) != ["value"] or body.blocks:
        raise HCLSyntaxError("expected a single value", 1)
    return body.attributes["value"].expr


def parse_template(text: str, path: str, first_line: int = 1) -> Node:
    """Template text (a heredoc body or a ``templatefile()`` file) as one template node."""
    if len(text) > MAX_FILE_BYTES:
        raise HCLSyntaxError(f"the template is more than {MAX_FILE_BYTES // 1024} KiB", first_line)
    return _Converter(Source(path, text), first_line - 1).template_text(text, first_line)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def _parse_tree(text: str) -> Any:
    import hcl2
    from lark.exceptions import LarkError, UnexpectedInput

    # The parse builds many small objects: collecting garbage meanwhile only costs time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return hcl2.parses_to_tree(text)
    except UnexpectedInput as exc:
        raise HCLSyntaxError(_syntax_message(exc), _int(getattr(exc, "line", 0)) or 1) from None
    except LarkError as exc:
        raise HCLSyntaxError(f"HCL syntax error: {clip(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)}", 1) from None
    finally:
        if collecting:
            gc.enable()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _syntax_message(exc: Exception) -> str:
    """``HCL syntax error at column C: unexpected <what>``, on one line."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    if isinstance(exc, UnexpectedToken) and getattr(exc.token, "type", "") != "$END":
        problem = f"unexpected {clip(repr(str(exc.token)), 60)}"
    elif isinstance(exc, UnexpectedCharacters):
        problem = f"unexpected character {clip(repr(exc.char), 20)}"
    elif isinstance(exc, (UnexpectedEOF, UnexpectedToken)):
        problem = "unexpected end of file"
    else:
        lines = str(exc).strip().splitlines()
        problem = clip(lines[0].strip() if lines else type(exc).__name__)
    column = _int(getattr(exc, "column", 0))
    return f"HCL syntax error at column {column}: {problem}" if column else f"HCL syntax error: {problem}"


# ---------------------------------------------------------------------------
# Template text outside quotes
# ---------------------------------------------------------------------------

_TEMPLATE_SPECIAL = re.compile(r'\$\$\{|%%\{|\$\{|%\{')
_CODE_SPECIAL = re.compile(r'["{}]')
_STRING_SPECIAL = re.compile(r'\\.|"|\$\$\{|%%\{|\$\{|%\{', re.S)


def _split_template(text: str) -> Iterator[tuple[bool, str]]:
    """``(is_code, text)`` pieces: literal text, and ``${...}`` / ``%{...}`` with their braces.

    Only brace matching (quoted strings skipped): the pieces are parsed by python-hcl2.
    """
    start = pos = 0
    while True:
        match = _TEMPLATE_SPECIAL.search(text, pos)
        if match is None:
            break
        if match.group() in ("$${", "%%{"):
            pos = match.end()
            continue
        if match.start() > start:
            yield False, text[start : match.start()]
        end = _code_end(text, match.end())
        yield True, text[match.start() : end]
        start = pos = end
    if start < len(text):
        yield False, text[start:]


def _code_end(text: str, pos: int) -> int:
    """The index after the ``}`` that closes the interpolation opened before ``pos``."""
    depth = 0
    while True:
        match = _CODE_SPECIAL.search(text, pos)
        if match is None:
            raise HCLSyntaxError("unclosed ${ or %{ in the template", text.count("\n", 0, pos) + 1)
        char = match.group()
        if char == '"':
            pos = _string_end(text, match.end())
        elif char == "{":
            depth, pos = depth + 1, match.end()
        elif depth:
            depth, pos = depth - 1, match.end()
        else:
            return match.end()


def _string_end(text: str, pos: int) -> int:
    """The index after the ``"`` that closes the quoted string opened before ``pos``."""
    while True:
        match = _STRING_SPECIAL.search(text, pos)
        if match is None:
            raise HCLSyntaxError("unclosed string in the template", text.count("\n", 0, pos) + 1)
        token = match.group()
        if token == '"':
            return match.end()
        pos = _code_end(text, match.end()) if token in ("${", "%{") else match.end()


def _quote_template(text: str) -> str:
    """Template text as the body of a quoted string with the same meaning (and lines)."""
    out = []
    for is_code, piece in _split_template(text):
        out.append(piece if is_code else piece.replace("\\", "\\\\").replace('"', '\\"'))
    return "".join(out)


# ---------------------------------------------------------------------------
# Parse tree -> nodes
# ---------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code[0] in "uU" and len(code) > 1:
            return chr(int(code[1:], 16))
        return match.group()

    return _ESCAPE.sub(one, text)


def _is_tree(item: Any) -> bool:
    return hasattr(item, "data")


def _trees(tree: Any) -> list[Any]:
    """The child rules of a tree, without layout (newlines and comments)."""
    return [c for c in tree.children if _is_tree(c) and c.data != "new_line_or_comment"]


def _tokens(tree: Any) -> list[Any]:
    return [c for c in tree.children if not _is_tree(c)]


def _name(tree: Any) -> str:
    """The text of an identifier / keyword / literal_value rule."""
    return str(tree.children[0])


_BINARY = {"||", "&&", "==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%"}


@dataclass(frozen=True, slots=True)
class _Marker:
    """A flat template directive before if/for blocks are assembled."""

    loc: Loc
    kind: str  # if, else, endif, for, endfor
    strip_left: bool
    strip_right: bool
    node: Node | None = None
    names: tuple[str, ...] = ()


class _Converter:
    """Maps python-hcl2's parse tree onto evaluator nodes, checking the nesting depth."""

    def __init__(self, source: Source, line_offset: int = 0) -> None:
        self.source = source
        self.line_offset = line_offset
        self.depth = 0

    def loc(self, item: Any) -> Loc:
        if _is_tree(item):
            meta = item.meta
            if getattr(meta, "empty", True):
                return Loc(self.source, self.line_offset + 1, 0, 0)
            return Loc(self.source, meta.line + self.line_offset, meta.start_pos, meta.end_pos)
        return Loc(self.source, (item.line or 1) + self.line_offset, item.start_pos or 0, item.end_pos or 0)

    # -- bodies --

    def body(self, tree: Any) -> Body:
        attributes: dict[str, Attribute] = {}
        blocks: list[Block] = []
        for child in _trees(tree):
            if child.data == "attribute":
                name_tree, value = child.children[0], child.children[-1]
                name = _name(name_tree)
                loc = self.loc(name_tree)
                if name in attributes:
                    raise HCLSyntaxError(f'attribute "{name}" is set twice (also on line {attributes[name].loc.line})',
                                         loc.line)
                attributes[name] = Attribute(name, self.expr(value), loc)
            elif child.data == "block":
                blocks.append(self.block(child))
        return Body(attributes, tuple(blocks))

    def block(self, tree: Any) -> Block:
        parts = _trees(tree)
        head, labels, body = parts[0], parts[1:-1], parts[-1]
        return Block(_name(head), tuple(self.label(label) for label in labels), self.body(body), self.loc(head))

    def label(self, tree: Any) -> str:
        if tree.data != "string":
            return _name(tree)
        text = []
        for part in _trees(tree):
            child = part.children[0]
            if _is_tree(child):
                raise HCLSyntaxError("block labels cannot use ${...} or %{...}", self.loc(tree).line)
            text.append(self.string_token(child))
        return "".join(text)

    # -- expressions --

    def expr(self, tree: Any) -> Node:
        data = tree.data
        if data == "expr_term":
            inner = _trees(tree)
            if len(inner) == 1 and len(tree.children) == 1:
                return self.expr(inner[0])  # a wrapper, not a level
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise HCLSyntaxError(f"expression nested more than {MAX_DEPTH} levels deep", self.loc(tree).line)
        try:
            method = getattr(self, "_" + data, None)
            if method is None:
                raise HCLSyntaxError(f"unsupported syntax ({data})", self.loc(tree).line)
            node: Node = method(tree, self.loc(tree))
            return node
        finally:
            self.depth -= 1

    def _expr_term(self, tree: Any, loc: Loc) -> Node:
        (inner,) = _trees(tree)  # (expression): parentheses only group
        return self.expr(inner)

    def _identifier(self, tree: Any, loc: Loc) -> Node:
        return Name(loc, _name(tree))

    def _keyword(self, tree: Any, loc: Loc) -> Node:
        return Name(loc, _name(tree))

    def _literal_value(self, tree: Any, loc: Loc) -> Node:
        word = _name(tree)
        return Literal(loc, None if word == "null" else word == "true")

    def _int_lit(self, tree: Any, loc: Loc) -> Node:
        return Literal(loc, int(str(tree.children[0])))

    def _float_lit(self, tree: Any, loc: Loc) -> Node:
        return Literal(loc, normal_number(float(str(tree.children[0]))))

    def _tuple(self, tree: Any, loc: Loc) -> Node:
        return ListExpr(loc, tuple(self.expr(item) for item in _trees(tree)))

    def _object(self, tree: Any, loc: Loc) -> Node:
        items = []
        for elem in _trees(tree):
            key_tree, value = _trees(elem)
            (key,) = _trees(key_tree)
            items.append((self.object_key(key), self.expr(value)))
        return ObjectExpr(loc, tuple(items))

    def object_key(self, tree: Any) -> Node:
        """A bare name as a key is its own text; anything else is an expression."""
        if tree.data == "keyword":
            return Literal(self.loc(tree), _name(tree))
        if tree.data == "expr_term" and len(tree.children) == 1 and _is_tree(tree.children[0]) \
                and tree.children[0].data == "identifier":
            return Literal(self.loc(tree), _name(tree.children[0]))
        return self.expr(tree)

    def _function_call(self, tree: Any, loc: Loc) -> Node:
        names = [_name(c) for c in _trees(tree) if c.data == "identifier"]
        args_tree = next((c for c in _trees(tree) if c.data == "arguments"), None)
        args: tuple[Node, ...] = ()
        expand = False
        if args_tree is not None:
            args = tuple(self.expr(arg) for arg in _trees(args_tree))
            expand = any(token.type == "ELLIPSIS" for token in _tokens(args_tree))
        return Call(loc, "::".join(names), args, expand)

    def _index_expr_term(self, tree: Any, loc: Loc) -> Node:
        target, step = _trees(tree)
        return Index(loc, self.expr(target), self.index_key(step))

    def index_key(self, tree: Any) -> Node:
        if tree.data == "short_index":  # x.0
            return Literal(self.loc(tree), int(str(tree.children[-1])))
        (key,) = _trees(tree)
        return self.expr(key)

    def _get_attr_expr_term(self, tree: Any, loc: Loc) -> Node:
        target, step = _trees(tree)
        return GetAttr(loc, self.expr(target), _name(_trees(step)[0]))

    def _attr_splat_expr_term(self, tree: Any, loc: Loc) -> Node:
        target, splat = _trees(tree)
        steps: list[Step] = []
        for step in _trees(splat):
            if step.data == "get_attr":
                steps.append(("attr", _name(_trees(step)[0])))
            else:
                steps.append(("index", self.index_key(step)))
        return Splat(loc, self.expr(target), tuple(steps))

    _full_splat_expr_term = _attr_splat_expr_term

    def _for_tuple_expr(self, tree: Any, loc: Loc) -> Node:
        parts = _trees(tree)
        key_var, value_var, collection = self.for_intro(parts[0])
        condition = self.expr(_trees(parts[2])[0]) if len(parts) > 2 else None
        return ForExpr(loc, key_var, value_var, collection, None, self.expr(parts[1]), condition, False)

    def _for_object_expr(self, tree: Any, loc: Loc) -> Node:
        parts = _trees(tree)
        key_var, value_var, collection = self.for_intro(parts[0])
        condition = self.expr(_trees(parts[3])[0]) if len(parts) > 3 else None
        group = any(getattr(token, "type", "") == "ELLIPSIS" for token in _tokens(tree))
        return ForExpr(loc, key_var, value_var, collection, self.expr(parts[1]), self.expr(parts[2]), condition,
                       group)

    def for_intro(self, tree: Any) -> tuple[str | None, str, Node]:
        parts = _trees(tree)
        names = [_name(p) for p in parts if p.data == "identifier"]
        (collection,) = [p for p in parts if p.data != "identifier"]
        if len(names) == 2:
            return names[0], names[1], self.expr(collection)
        return None, names[0], self.expr(collection)

    def _conditional(self, tree: Any, loc: Loc) -> Node:
        condition, then, other = _trees(tree)
        return Conditional(loc, self.expr(condition), self.expr(then), self.expr(other))

    def _binary_op(self, tree: Any, loc: Loc) -> Node:
        left, term = _trees(tree)
        operator, right = _trees(term)
        op = str(operator.children[0]).strip()  # a line break before it is part of the token
        if op not in _BINARY:
            raise HCLSyntaxError(f"unknown operator {op}", loc.line)
        return Binary(loc, op, self.expr(left), self.expr(right))

    def _unary_op(self, tree: Any, loc: Loc) -> Node:
        (token,) = _tokens(tree)
        (operand,) = _trees(tree)
        return Unary(loc, str(token), self.expr(operand))

    # -- strings and templates --

    def string_token(self, token: Any) -> str:
        """Literal text of one piece of a quoted string."""
        kind, text = token.type, str(token)
        if kind in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
            return text[1:]  # $${ -> ${, %%{ -> %{
        return _unescape(text)

    def _string(self, tree: Any, loc: Loc) -> Node:
        return self.template(loc, [part.children[0] for part in _trees(tree)])

    def _template_string(self, tree: Any, loc: Loc) -> Node:
        # \"text\" inside a directive of a quoted string: a string literal.
        text = str(tree.children[0])
        return Literal(loc, _unescape(text[2:-2]))

    def _heredoc_template(self, tree: Any, loc: Loc) -> Node:
        return self.heredoc(str(tree.children[0]), loc, trim=False)

    def _heredoc_template_trim(self, tree: Any, loc: Loc) -> Node:
        return self.heredoc(str(tree.children[0]), loc, trim=True)

    def heredoc(self, raw: str, loc: Loc, *, trim: bool) -> Node:
        """``<<EOT`` ... ``EOT``: the body lines, each with its newline; ``<<-`` removes the indent."""
        lines = raw.split("\n")
        body = lines[1:-2]  # after the opener; before the closing marker line and the final ""
        if trim:
            indent = min((len(line) - len(line.lstrip(" \t")) for line in body if line.strip()), default=0)
            body = [line[indent:] for line in body]
        text = "".join(line + "\n" for line in body)
        if "${" not in text and "%{" not in text:
            return Literal(loc, text)
        return self.template_text(text, loc.line + 1)

    def template_text(self, text: str, first_line: int) -> Node:
        """Unquoted template text, parsed as the quoted string it is equivalent to."""
        wrapped = f'value = "{_quote_template(text)}"\n'
        inner = _Converter(Source(self.source.path, wrapped), first_line - 1)
        inner.depth = self.depth
        try:
            tree = _parse_tree(wrapped)
        except HCLSyntaxError as exc:
            raise HCLSyntaxError(exc.message, exc.line + first_line - 1) from None
        attribute = _trees(tree.children[0])[0]
        return inner.expr(attribute.children[-1])

    def template(self, loc: Loc, pieces: list[Any]) -> Node:
        """Assemble string pieces (text, interpolations, directives) into a node."""
        flat: list[Any] = []
        for piece in pieces:
            if not _is_tree(piece):
                text = self.string_token(piece)
                if flat and isinstance(flat[-1], str):
                    flat[-1] += text
                else:
                    flat.append(text)
            elif piece.data == "interpolation":
                (inner,) = _trees(piece)
                flat.append(self.expr(inner))
            else:
                flat.append(self.marker(piece))
        _strip_around_markers(flat)
        parts = self.assemble(flat, loc)
        if not parts:
            return Literal(loc, "")
        if len(parts) == 1 and isinstance(parts[0], str):
            return Literal(loc, parts[0])
        return Template(loc, parts)

    def marker(self, tree: Any) -> _Marker:
        loc = self.loc(tree)
        tokens = [str(t) for t in _tokens(tree)]
        kind = next(t for t in tokens if t in ("if", "else", "endif", "for", "endfor"))
        strip_left = len(tokens) > 1 and tokens[1] == "~"
        strip_right = len(tokens) > 2 and tokens[-2] == "~"
        inner = _trees(tree)
        names = tuple(_name(t) for t in inner if t.data == "identifier")
        exprs = [t for t in inner if t.data != "identifier"]
        node = self.expr(exprs[0]) if exprs else None
        return _Marker(loc, kind, strip_left, strip_right, node, names)

    def assemble(self, flat: list[Any], loc: Loc) -> tuple[Part, ...]:
        """Nest ``%{ if }``/``%{ for }`` markers into IfPart and ForPart."""
        stack: list[tuple[_Marker, list[Part], list[Part] | None]] = []
        current: list[Part] = []
        for item in flat:
            if not isinstance(item, _Marker):
                if not (isinstance(item, str) and not item):
                    current.append(item)
                continue
            if item.kind in ("if", "for"):
                stack.append((item, current, None))
                current = []
            elif item.kind == "else":
                if not stack or stack[-1][0].kind != "if" or stack[-1][2] is not None:
                    raise HCLSyntaxError("%{ else } without a matching %{ if }", item.loc.line)
                opener, outer, _ = stack.pop()
                stack.append((opener, outer, current))
                current = []
            else:
                wanted = "if" if item.kind == "endif" else "for"
                if not stack or stack[-1][0].kind != wanted:
                    raise HCLSyntaxError(f"%{{ {item.kind} }} without a matching %{{ {wanted} }}", item.loc.line)
                opener, outer, then = stack.pop()
                assert opener.node is not None
                if wanted == "if":
                    part: Part = IfPart(opener.loc, opener.node,
                                        tuple(then if then is not None else current),
                                        tuple(current if then is not None else ()))
                else:
                    key_var, value_var = (opener.names if len(opener.names) == 2 else (None, opener.names[0]))
                    part = ForPart(opener.loc, key_var, value_var, opener.node, tuple(current))
                outer.append(part)
                current = outer
        if stack:
            raise HCLSyntaxError(f"%{{ {stack[-1][0].kind} }} is never closed", stack[-1][0].loc.line)
        return tuple(current)


def _strip_around_markers(flat: list[Any]) -> None:
    """``%{~ ...}`` and ``%{ ... ~}`` remove the whitespace next to a directive."""
    for i, item in enumerate(flat):
        if not isinstance(item, _Marker):
            continue
        if item.strip_left and i > 0 and isinstance(flat[i - 1], str):
            flat[i - 1] = flat[i - 1].rstrip()
        if item.strip_right and i + 1 < len(flat) and isinstance(flat[i + 1], str):
            flat[i + 1] = flat[i + 1].lstrip()
