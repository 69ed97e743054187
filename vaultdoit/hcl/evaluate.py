"""The HCL expression evaluator: syntax nodes, the scope they read, and cty's value rules.

Values are plain Python: str, int/float (cty's one number type), bool, None (null),
list (tuples, lists and sets) and dict (objects and maps). Nothing here knows about
Packer: the loader hands a :class:`Scope` its names (``var``, ``local``...) and its
function table.

Two exceptions leave an evaluation: :class:`Unresolved` when a value cannot be known
before the build (an unset variable, a data source, an unsupported function) and
:class:`EvalError` when the expression is wrong (Packer would refuse it too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

__all__ = [
    "Source", "Loc", "Unresolved", "EvalError", "Effects", "Namespace", "Function", "Scope",
    "Node", "Literal", "Template", "IfPart", "ForPart", "Name", "GetAttr", "Index", "Splat",
    "ListExpr", "ObjectExpr", "ForExpr", "Call", "Unary", "Binary", "Conditional",
    "to_str", "to_number", "to_int", "to_bool", "to_list", "to_map", "equal", "number_text",
    "normal_number", "type_name", "iterate", "clip", "describe", "object_key", "Part", "Step",
]

CLIP = 200  # characters of quoted source text in one printed line


def clip(text: str, limit: int = CLIP) -> str:
    """``text`` on one line, cut to about ``limit`` characters."""
    flat = " ".join(text.split()) if "\n" in text else text
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# Where nodes come from
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """The text a node was parsed from, and the file it names in messages."""

    path: str
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class Loc:
    """A node's place: line for messages, offsets into the source for its raw text."""

    source: Source
    line: int
    start: int
    end: int

    @property
    def where(self) -> str:
        return f"{self.source.path}:{self.line}"

    @property
    def text(self) -> str:
        return self.source.text[self.start : self.end]


# ---------------------------------------------------------------------------
# Outcomes other than a value
# ---------------------------------------------------------------------------


class Unresolved(Exception):
    """The value cannot be known before the build; ``reason`` says why.

    ``prefix`` is the literal text a string template produced before the unknown part.
    """

    def __init__(self, reason: str, *, hint: str | None = None, prefix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.prefix = prefix

    def bare(self) -> Unresolved:
        """The same cause without a prefix (once a function or operator has used the value)."""
        return self if not self.prefix else Unresolved(self.reason, hint=self.hint)


class EvalError(Exception):
    """The expression is wrong; ``where`` is ``file:line`` once a node has claimed it."""

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where


class MissingFile(EvalError):
    """A file function named a file that does not exist (yet): an error inside try()/can(),
    an unknown value of an attribute, which then depends on the file (see loader._lenient)."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


def _at(exc: EvalError, loc: Loc) -> EvalError:
    if exc.where is None:
        exc.where = loc.where
    return exc


@dataclass
class Effects:
    """What evaluating something touched: files read, non-deterministic functions called."""

    reads: set[str] = field(default_factory=set)
    volatile: set[str] = field(default_factory=set)

    def merge(self, other: Effects) -> None:
        self.reads |= other.reads
        self.volatile |= other.volatile


# ---------------------------------------------------------------------------
# Scope
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    """A root name such as ``var`` whose attributes are looked up on demand."""

    name: str
    get: Callable[[str, Scope], Any]


@dataclass(frozen=True)
class Function:
    """A function of the table: ``impl(scope, args)``; a lazy one gets the argument nodes."""

    impl: Callable[[Scope, list[Any]], Any]
    min_args: int
    max_args: int | None
    lazy: bool = False


class Scope:
    """What an expression may refer to: names, namespaces, functions, folders, effects."""

    __slots__ = ("names", "namespaces", "functions", "base_dir", "cwd", "env", "effects")

    def __init__(
        self,
        *,
        functions: Mapping[str, Function],
        base_dir: str,
        cwd: str,
        names: Mapping[str, Any] | None = None,
        namespaces: Mapping[str, Namespace] | None = None,
        env: Mapping[str, str] | None = None,
        effects: Effects | None = None,
    ) -> None:
        self.functions = functions
        self.base_dir = base_dir  # file functions resolve relative paths here (Packer: the template folder)
        self.cwd = cwd  # abspath() resolves relative paths here
        self.names: Mapping[str, Any] = names or {}
        self.namespaces: Mapping[str, Namespace] = namespaces or {}
        self.env = env  # set only where env() is allowed (variable defaults)
        self.effects = effects if effects is not None else Effects()

    def child(self, names: Mapping[str, Any]) -> Scope:
        """The same scope with more plain names (a for expression's variables)."""
        return Scope(functions=self.functions, base_dir=self.base_dir, cwd=self.cwd,
                     names={**self.names, **names}, namespaces=self.namespaces, env=self.env,
                     effects=self.effects)

    def with_effects(self, effects: Effects) -> Scope:
        """The same scope recording into ``effects``."""
        return Scope(functions=self.functions, base_dir=self.base_dir, cwd=self.cwd, names=self.names,
                     namespaces=self.namespaces, env=self.env, effects=effects)


# ---------------------------------------------------------------------------
# Values (cty's rules, as far as templates need them)
# ---------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL = Context(prec=60)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, Namespace):
        return f'"{value.name}" namespace'
    return type(value).__name__


def normal_number(value: int | float) -> int | float:
    """cty has one number type: keep whole numbers as int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def number_text(value: int | float) -> str:
    """A number as cty prints it: ``3``, ``2.5``, ``0.0000001``, never ``3.0`` or ``1e-07``."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return "+Inf" if value > 0 else "-Inf" if value < 0 else "NaN"
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number_text(value)
    if value is None:
        raise EvalError("a null value cannot be used as a string")
    raise EvalError(f"a {type_name(value)} cannot be used as a string")


def to_number(value: Any) -> int | float:
    if isinstance(value, bool) or value is None:
        raise EvalError(f"a number is required, got {describe(value)}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        if any(c in value for c in ".eE"):
            return normal_number(float(value))
        return int(value)
    raise EvalError(f"a number is required, got {describe(value)}")


def to_int(value: Any) -> int:
    number = to_number(value)
    if isinstance(number, float):
        raise EvalError(f"a whole number is required, got {number_text(number)}")
    return number


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise EvalError(f"a bool is required, got {describe(value)}")


def to_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    raise EvalError(f"a list is required, got {describe(value)}")


def to_map(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise EvalError(f"a map is required, got {describe(value)}")


def describe(value: Any) -> str:
    """A short description of a value for messages."""
    if isinstance(value, str):
        return f'"{clip(value, 40)}"'
    if isinstance(value, (bool, int, float)) or value is None:
        return "null" if value is None else to_str(value)
    return f"a {type_name(value)}"


def equal(left: Any, right: Any) -> bool:
    """HCL's ``==``: same type and same value (``1 == "1"`` is false)."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(equal(v, right[k]) for k, v in left.items())
    return False


def iterate(value: Any) -> list[tuple[Any, Any]]:
    """(key, value) pairs of a list (index order) or a map (key order), as ``for`` sees them."""
    if isinstance(value, list):
        return list(enumerate(value))
    if isinstance(value, dict):
        return sorted(value.items())
    raise EvalError(f"a for expression needs a list or a map, got {describe(value)}")


def arithmetic(op: str, left: Any, right: Any) -> int | float:
    """``+ - * / %`` on numbers (numeric strings convert, as in cty)."""
    a, b = to_number(left), to_number(right)
    if op in ("/", "%") and b == 0:
        raise EvalError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "%":
            rest = abs(a) % abs(b)  # Go's truncated modulo: the sign follows the dividend
            return -rest if a < 0 else rest
        if a % b == 0:
            return a // b
    if op == "%":
        return normal_number(math.fmod(a, b))
    # Decimal keeps 0.1 + 0.2 at 0.3, as cty's big floats do.
    x, y = Decimal(repr(a) if isinstance(a, float) else a), Decimal(repr(b) if isinstance(b, float) else b)
    result = {"+": _DECIMAL.add, "-": _DECIMAL.subtract, "*": _DECIMAL.multiply, "/": _DECIMAL.divide}[op](x, y)
    return normal_number(float(result))


def compare(op: str, left: Any, right: Any) -> bool:
    a, b = to_number(left), to_number(right)
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------


class Node:
    """A parsed expression. ``ev`` returns its value or raises Unresolved / EvalError."""

    __slots__ = ()
    loc: Loc

    def ev(self, scope: Scope) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class Literal(Node):
    loc: Loc
    value: Any

    def ev(self, scope: Scope) -> Any:
        return self.value


@dataclass(frozen=True, slots=True, eq=False)
class IfPart:
    """``%{ if cond }...%{ else }...%{ endif }`` inside a template."""

    loc: Loc
    condition: Node
    then: tuple[Part, ...]
    other: tuple[Part, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ForPart:
    """``%{ for k, v in coll }...%{ endfor }`` inside a template."""

    loc: Loc
    key_var: str | None
    value_var: str
    collection: Node
    body: tuple[Part, ...]


Part = str | Node | IfPart | ForPart


@dataclass(frozen=True, slots=True, eq=False)
class Template(Node):
    """A string template: literal text, ``${...}`` interpolations and ``%{...}`` directives."""

    loc: Loc
    parts: tuple[Part, ...]

    def ev(self, scope: Scope) -> Any:
        parts = self.parts
        if len(parts) == 1 and isinstance(parts[0], Node):
            return parts[0].ev(scope)  # "${x}" alone keeps x's type, as in HCL
        out: list[str] = []
        try:
            _render(parts, scope, out)
        except Unresolved as exc:
            raise Unresolved(exc.reason, hint=exc.hint, prefix="".join(out) + exc.prefix) from None
        return "".join(out)


def _render(parts: Sequence[Part], scope: Scope, out: list[str]) -> None:
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, IfPart):
            try:
                chosen = to_bool(part.condition.ev(scope))
            except Unresolved as exc:
                raise exc.bare() from None
            except EvalError as exc:
                raise _at(exc, part.loc) from None
            _render(part.then if chosen else part.other, scope, out)
        elif isinstance(part, ForPart):
            try:
                pairs = iterate(part.collection.ev(scope))
            except Unresolved as exc:
                raise exc.bare() from None
            except EvalError as exc:
                raise _at(exc, part.loc) from None
            for key, value in pairs:
                names = {part.value_var: value}
                if part.key_var is not None:
                    names[part.key_var] = key
                _render(part.body, scope.child(names), out)
        else:
            value = part.ev(scope)
            try:
                out.append(to_str(value))
            except EvalError as exc:
                raise _at(exc, part.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class Name(Node):
    """A bare name: a for/template variable, or a namespace root such as ``var``."""

    loc: Loc
    name: str

    def ev(self, scope: Scope) -> Any:
        if self.name in scope.names:
            return scope.names[self.name]
        namespace = scope.namespaces.get(self.name)
        if namespace is not None:
            return namespace
        raise EvalError(f'unknown name "{self.name}"', where=self.loc.where)


@dataclass(frozen=True, slots=True, eq=False)
class GetAttr(Node):
    loc: Loc
    target: Node
    name: str

    def ev(self, scope: Scope) -> Any:
        try:
            target = self.target.ev(scope)
        except Unresolved as exc:
            raise exc.bare() from None
        if isinstance(target, Namespace):
            try:
                return target.get(self.name, scope)
            except EvalError as exc:
                raise _at(exc, self.loc) from None
        try:
            return get_attr(target, self.name)
        except EvalError as exc:
            raise _at(exc, self.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class Index(Node):
    loc: Loc
    target: Node
    key: Node

    def ev(self, scope: Scope) -> Any:
        try:
            target, key = self.target.ev(scope), self.key.ev(scope)
            return index(target, key)
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None


def get_attr(target: Any, name: str) -> Any:
    if isinstance(target, dict):
        if name not in target:
            raise EvalError(f'the object has no attribute "{name}"')
        return target[name]
    if isinstance(target, Namespace):
        raise EvalError(f'"{target.name}" cannot be used here')
    raise EvalError(f'cannot read attribute "{name}" of {describe(target)}')


def index(target: Any, key: Any) -> Any:
    """``x[key]`` on a list or a map."""
    if isinstance(target, dict):
        name = to_str(key)
        if name not in target:
            raise EvalError(f'the map has no key "{clip(name, 60)}"')
        return target[name]
    if isinstance(target, list):
        position = to_int(key)
        if not 0 <= position < len(target):
            raise EvalError(f"index {position} is out of range (the list has {len(target)} elements)")
        return target[position]
    raise EvalError(f"cannot index {describe(target)}")


# A splat step: an attribute name or an index expression.
Step = tuple[str, str] | tuple[str, Node]


@dataclass(frozen=True, slots=True, eq=False)
class Splat(Node):
    """``x[*].a.b`` (and the older ``x.*.a``): the steps applied to every element."""

    loc: Loc
    target: Node
    steps: tuple[Step, ...]

    def ev(self, scope: Scope) -> Any:
        try:
            target = self.target.ev(scope)
            # A splat of null is an empty list, of a single value a one-element list.
            items = [] if target is None else target if isinstance(target, list) else [target]
            out = []
            for item in items:
                for kind, step in self.steps:
                    if kind == "attr":
                        assert isinstance(step, str)
                        item = get_attr(item, step)
                    else:
                        assert isinstance(step, Node)
                        item = index(item, step.ev(scope))
                out.append(item)
            return out
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class ListExpr(Node):
    loc: Loc
    items: tuple[Node, ...]

    def ev(self, scope: Scope) -> Any:
        try:
            return [item.ev(scope) for item in self.items]
        except Unresolved as exc:
            raise exc.bare() from None


@dataclass(frozen=True, slots=True, eq=False)
class ObjectExpr(Node):
    loc: Loc
    items: tuple[tuple[Node, Node], ...]

    def ev(self, scope: Scope) -> Any:
        out: dict[str, Any] = {}
        try:
            for key_node, value_node in self.items:
                key = object_key(key_node, scope)
                out[key] = value_node.ev(scope)
        except Unresolved as exc:
            raise exc.bare() from None
        return out


def object_key(node: Node, scope: Scope) -> str:
    try:
        return to_str(node.ev(scope))
    except EvalError as exc:
        raise _at(exc, node.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class ForExpr(Node):
    """``[for k, v in coll : value if cond]`` or ``{for k, v in coll : key => value... if cond}``."""

    loc: Loc
    key_var: str | None
    value_var: str
    collection: Node
    key: Node | None  # None: a list comprehension
    value: Node
    condition: Node | None
    group: bool  # ``...``: values with the same key are collected into lists

    def ev(self, scope: Scope) -> Any:
        try:
            return self._ev(scope)
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None

    def _ev(self, scope: Scope) -> Any:
        as_list: list[Any] = []
        as_map: dict[str, Any] = {}
        for key, value in iterate(self.collection.ev(scope)):
            names = {self.value_var: value}
            if self.key_var is not None:
                names[self.key_var] = key
            inner = scope.child(names)
            if self.condition is not None and not to_bool(self.condition.ev(inner)):
                continue
            if self.key is None:
                as_list.append(self.value.ev(inner))
                continue
            name = to_str(self.key.ev(inner))
            if self.group:
                as_map.setdefault(name, []).append(self.value.ev(inner))
            elif name in as_map:
                raise EvalError(f'duplicate key "{clip(name, 60)}" in a for expression (add ... to group them)')
            else:
                as_map[name] = self.value.ev(inner)
        return as_list if self.key is None else as_map


@dataclass(frozen=True, slots=True, eq=False)
class Call(Node):
    loc: Loc
    name: str
    args: tuple[Node, ...]
    expand: bool = False  # f(a, list...)

    def ev(self, scope: Scope) -> Any:
        function = scope.functions.get(self.name)
        if function is None:
            raise Unresolved(f"function {self.name}() is not supported by vaultdoit",
                             hint="use a literal, a variable or a supported function")
        try:
            if function.lazy:
                return function.impl(scope, list(self.args))
            try:
                args = [arg.ev(scope) for arg in self.args]
            except Unresolved as exc:
                raise exc.bare() from None
            if self.expand:
                if not args:
                    raise EvalError("... needs an argument to expand")
                args = args[:-1] + to_list(args[-1])
            low, high = function.min_args, function.max_args
            if len(args) < low or (high is not None and len(args) > high):
                wanted = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
                raise EvalError(f"takes {wanted} arguments, got {len(args)}")
            return function.impl(scope, args)
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            if exc.where is None:
                exc.message = f"{self.name}(): {exc.message}"
            raise _at(exc, self.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class Unary(Node):
    loc: Loc
    op: str
    operand: Node

    def ev(self, scope: Scope) -> Any:
        try:
            value = self.operand.ev(scope)
            if self.op == "!":
                return not to_bool(value)
            number = to_number(value)
            return -number
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class Binary(Node):
    loc: Loc
    op: str
    left: Node
    right: Node

    def ev(self, scope: Scope) -> Any:
        try:
            op = self.op
            # && and || short-circuit, so a guarded reference need not resolve.
            if op == "&&":
                return to_bool(self.left.ev(scope)) and to_bool(self.right.ev(scope))
            if op == "||":
                return to_bool(self.left.ev(scope)) or to_bool(self.right.ev(scope))
            left, right = self.left.ev(scope), self.right.ev(scope)
            if op == "==":
                return equal(left, right)
            if op == "!=":
                return not equal(left, right)
            if op in ("<", ">", "<=", ">="):
                return compare(op, left, right)
            return arithmetic(op, left, right)
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None


@dataclass(frozen=True, slots=True, eq=False)
class Conditional(Node):
    loc: Loc
    condition: Node
    then: Node
    other: Node

    def ev(self, scope: Scope) -> Any:
        try:
            chosen = to_bool(self.condition.ev(scope))
        except Unresolved as exc:
            raise exc.bare() from None
        except EvalError as exc:
            raise _at(exc, self.loc) from None
        # Only the chosen branch is evaluated.
        return (self.then if chosen else self.other).ev(scope)
