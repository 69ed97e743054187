"""The function table of the evaluator, with Packer's semantics (cty's standard library).

File functions read for real and record every path in the scope's effects, so a
stage's key follows the files' contents. Functions whose result changes from run to
run (``timestamp()``, ``uuidv4()``, ``bcrypt()``) return a fixed value and are
recorded as volatile: the loader refuses them where a stable path is needed. Secret
stores (``vault()``...) and functions not listed here are Unresolved.
"""

from __future__ import annotations

import base64
import codecs
import csv
import functools
import gzip
import hashlib
import io
import ipaddress
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from vaultdoit.hcl.evaluate import (
    Call, EvalError, Function, ListExpr, Literal, MissingFile, Name, Node, ObjectExpr, Scope, Unresolved, clip,
    describe,
    equal, normal_number, number_text, to_bool, to_int, to_list, to_map, to_number, to_str, type_name,
)

__all__ = ["FUNCTIONS", "TypeSpec", "type_spec", "convert", "FIXED_TIMESTAMP",
           "MAX_READ_BYTES"]

# What the non-deterministic functions return: stable, so keys do not change run to run.
FIXED_TIMESTAMP = "1970-01-01T00:00:00Z"
FIXED_UUID = "00000000-0000-4000-8000-000000000000"
FIXED_BCRYPT = "$2a$10$" + "0" * 53

MAX_READ_BYTES = 16 * 2**20  # a file() bigger than this is refused
MAX_RANGE = 1024  # as cty: range() of more elements is an error
MAX_FILESET = 100_000  # directory entries fileset() may visit

_PATH_HINT = "relative paths are relative to the template folder (use path.root to be explicit)"


def _fn(min_args: int, max_args: int | None = -1, *, lazy: bool = False) -> Callable[[Callable[..., Any]], Function]:
    """Make a table entry; ``max_args=-1`` means exactly ``min_args``."""

    def wrap(impl: Callable[..., Any]) -> Function:
        return Function(impl, min_args, min_args if max_args == -1 else max_args, lazy)

    return wrap


def _strings(impl: Callable[..., Any], count: int) -> Function:
    """A plain function of ``count`` strings."""
    return Function(lambda scope, args: impl(*(to_str(a) for a in args)), count, count)


# ---------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------


def _title(text: str) -> str:
    """Go's strings.Title: upper-case the first letter of each word."""
    out, previous = [], " "
    for char in text:
        separator = not (previous.isalnum() or previous == "_")
        out.append(char.upper() if separator else char)
        previous = char
    return "".join(out)


def _trimprefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _trimsuffix(text: str, suffix: str) -> str:
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


@_fn(2)
def _split(scope: Scope, args: list[Any]) -> list[str]:
    sep, text = to_str(args[0]), to_str(args[1])
    return text.split(sep) if sep else list(text)


@_fn(2, None)
def _join(scope: Scope, args: list[Any]) -> str:
    sep = to_str(args[0])
    items = [item for lst in args[1:] for item in to_list(lst)]
    if any(item is None for item in items):
        raise EvalError("cannot join a null element")
    return sep.join(to_str(item) for item in items)


@_fn(3)
def _replace(scope: Scope, args: list[Any]) -> str:
    text, old, new = (to_str(a) for a in args)
    if len(old) > 1 and old.startswith("/") and old.endswith("/"):
        # As in newer Packer (and Terraform): /.../ is a regular expression.
        return _go_regex(old[1:-1]).sub(lambda m: _go_expand(m, new), text)
    return text.replace(old, new)


@_fn(3)
def _substr(scope: Scope, args: list[Any]) -> str:
    text, offset, length = to_str(args[0]), to_int(args[1]), to_int(args[2])
    if offset < 0:
        offset = max(len(text) + offset, 0)
    if offset > len(text):
        raise EvalError("offset is beyond the end of the string")
    if length < 0:
        return text[offset:]
    return text[offset : offset + length]


@_fn(2)
def _indent(scope: Scope, args: list[Any]) -> str:
    return to_str(args[1]).replace("\n", "\n" + " " * to_int(args[0]))


@_fn(1)
def _chomp(scope: Scope, args: list[Any]) -> str:
    return re.sub(r"(?:\r\n?|\n)*\Z", "", to_str(args[0]))


@_fn(2)
def _trim(scope: Scope, args: list[Any]) -> str:
    return to_str(args[0]).strip(to_str(args[1]))


# -- format() and formatlist() --

_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


@_fn(1, None)
def _format(scope: Scope, args: list[Any]) -> str:
    return _format_values(to_str(args[0]), args[1:])


def _format_values(spec: str, values: list[Any]) -> str:
    out: list[str] = []
    used = 0
    pos = 0
    for match in _VERB.finditer(spec):
        out.append(spec[pos : match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if used >= len(values):
            raise EvalError(f"not enough arguments for %{verb} at {match.start()}")
        out.append(_format_verb(flags, width, precision, verb, values[used]))
        used += 1
    tail = spec[pos:]
    if "%" in tail:
        raise EvalError(f"unsupported or unterminated verb at {pos + tail.index('%')}")
    out.append(tail)
    if used != len(values):
        raise EvalError(f"too many arguments; only {used} used by format string")
    return "".join(out)


def _format_verb(flags: str, width: str | None, precision: str | None, verb: str, value: Any) -> str:
    pad = f"%{flags.replace('#', '')}{width or ''}"
    prec = f".{precision or 0}" if precision is not None else ""
    if verb == "v":
        if "#" in flags or isinstance(value, (list, dict)):
            text = _json(value)
        else:
            text = "null" if value is None else to_str(value)
        return (pad + "s") % text
    if verb == "s":
        text = to_str(value)
        return (pad + "s") % (text[: int(precision or 0)] if precision is not None else text)
    if verb == "q":
        return (pad + "s") % json.dumps(to_str(value), ensure_ascii=False)
    if verb == "t":
        return (pad + "s") % to_str(to_bool(value))
    if verb in "dbxXo":
        if isinstance(value, str) and verb in "xX" and not _looks_numeric(value):
            raise EvalError(f'unsupported value for "%{verb}": a number is required')
        number = to_int(value)
        if verb == "b":
            digits = format(abs(number), "b")
            sign = "-" if number < 0 else "+" if "+" in flags else ""
            return (pad + "s") % (sign + digits)
        return (pad + verb) % number
    if verb in "eEfFgG":
        return (pad + prec + verb) % float(to_number(value))
    raise EvalError(f"unsupported verb %{verb}")


def _looks_numeric(text: str) -> bool:
    try:
        to_number(text)
        return True
    except EvalError:
        return False


@_fn(1, None)
def _formatlist(scope: Scope, args: list[Any]) -> list[str]:
    spec, rest = to_str(args[0]), args[1:]
    lengths = {len(arg) for arg in rest if isinstance(arg, list)}
    if len(lengths) > 1:
        raise EvalError("all list arguments must have the same length")
    count = lengths.pop() if lengths else 1
    return [_format_values(spec, [arg[i] if isinstance(arg, list) else arg for arg in rest]) for i in range(count)]


# -- regular expressions (Go's RE2 syntax, translated) --

_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7F", "blank": "\\t ", "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}


@functools.lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern with Python's ``re``; features ``re`` lacks are Unresolved."""
    text = pattern.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!")
    text = re.sub(r"\[:(\w+):\]", lambda m: _POSIX.get(m.group(1), m.group()), text)
    text = text.replace("\\z", "\\Z")
    if re.search(r"\\[pP]|\(\?[a-zA-Z]*U", text):
        raise Unresolved(f"the regular expression {clip(pattern, 60)!r} uses RE2 features vaultdoit does not evaluate")
    try:
        return re.compile(text)
    except re.error as exc:
        raise EvalError(f"invalid regular expression {clip(pattern, 60)!r}: {exc}") from None


_GO_GROUP = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


def _go_expand(match: re.Match[str], template: str) -> str:
    """Go's Regexp.Expand: ``$1``, ``${1}``, ``$name``, ``${name}``; ``$$`` is a dollar."""

    def group(ref: re.Match[str]) -> str:
        if ref.group() == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group: Go expands it to nothing
            value = ""
        return value or ""

    return _GO_GROUP.sub(group, template)


def _captures(match: re.Match[str], compiled: re.Pattern[str]) -> Any:
    if compiled.groupindex:
        return {name: match.group(name) or "" for name in compiled.groupindex}
    if compiled.groups:
        return [g or "" for g in match.groups()]
    return match.group()


@_fn(2)
def _regex(scope: Scope, args: list[Any]) -> Any:
    compiled = _go_regex(to_str(args[0]))
    match = compiled.search(to_str(args[1]))
    if match is None:
        raise EvalError("pattern did not match any part of the given string")
    return _captures(match, compiled)


@_fn(2)
def _regexall(scope: Scope, args: list[Any]) -> list[Any]:
    compiled = _go_regex(to_str(args[0]))
    return [_captures(m, compiled) for m in compiled.finditer(to_str(args[1]))]


@_fn(3)
def _regex_replace(scope: Scope, args: list[Any]) -> str:
    text, pattern, new = (to_str(a) for a in args)
    return _go_regex(pattern).sub(lambda m: _go_expand(m, new), text)


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------


def _numbers(args: Iterable[Any]) -> list[int | float]:
    return [to_number(a) for a in args]


@_fn(1, None)
def _max(scope: Scope, args: list[Any]) -> Any:
    return max(_numbers(args))


@_fn(1, None)
def _min(scope: Scope, args: list[Any]) -> Any:
    return min(_numbers(args))


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@_fn(2)
def _parseint(scope: Scope, args: list[Any]) -> int:
    """Go's big.Int SetString: bases 2 to 62; letters are case-blind up to base 36."""
    text, base = to_str(args[0]), to_int(args[1])
    if not 2 <= base <= 62:
        raise EvalError("base must be between 2 and 62")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    value = 0
    for char in digits if digits else "?":
        digit = _DIGITS.find(char.lower() if base <= 36 else char)
        if not 0 <= digit < base:
            raise EvalError(f"cannot parse {describe(text)} as a base {base} integer")
        value = value * base + digit
    return sign * value


@_fn(2)
def _log(scope: Scope, args: list[Any]) -> Any:
    number, base = _numbers(args)
    return normal_number(math.log(number, base))


@_fn(2)
def _pow(scope: Scope, args: list[Any]) -> Any:
    number, power = _numbers(args)
    return normal_number(float(number) ** power)


def _number_fn(impl: Callable[[Any], Any]) -> Function:
    return Function(lambda scope, args: normal_number(impl(to_number(args[0]))), 1, 1)


# ---------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------


@_fn(1)
def _length(scope: Scope, args: list[Any]) -> int:
    value = args[0]
    if isinstance(value, (list, dict, str)):
        return len(value)
    raise EvalError(f"length() of {describe(value)}")


@_fn(2, 3)
def _lookup(scope: Scope, args: list[Any]) -> Any:
    mapping, key = to_map(args[0]), to_str(args[1])
    if key in mapping:
        return mapping[key]
    if len(args) == 3:
        return args[2]
    raise EvalError(f'the map has no key "{clip(key, 60)}" and no default was given')


@_fn(0, None)
def _merge(scope: Scope, args: list[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for mapping in args:
        if mapping is not None:
            merged.update(to_map(mapping))
    return merged


@_fn(1, None)
def _concat(scope: Scope, args: list[Any]) -> list[Any]:
    return [item for lst in args for item in to_list(lst)]


@_fn(1, None)
def _coalesce(scope: Scope, args: list[Any]) -> Any:
    for value in args:
        if value is not None and value != "":
            return value
    raise EvalError("no non-null, non-empty-string arguments")


@_fn(1, None)
def _coalescelist(scope: Scope, args: list[Any]) -> Any:
    for value in args:
        if to_list(value):
            return value
    raise EvalError("no non-empty list arguments")


@_fn(1)
def _compact(scope: Scope, args: list[Any]) -> list[Any]:
    return [v for v in to_list(args[0]) if v is not None and v != ""]


@_fn(2)
def _contains(scope: Scope, args: list[Any]) -> bool:
    return any(equal(item, args[1]) for item in to_list(args[0]))


@_fn(1)
def _distinct(scope: Scope, args: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in to_list(args[0]):
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


@_fn(2)
def _element(scope: Scope, args: list[Any]) -> Any:
    items, position = to_list(args[0]), to_int(args[1])
    if not items:
        raise EvalError("cannot use element() with an empty list")
    if position < 0:
        raise EvalError("cannot use element() with a negative index")
    return items[position % len(items)]


@_fn(2)
def _index_of(scope: Scope, args: list[Any]) -> int:
    for position, item in enumerate(to_list(args[0])):
        if equal(item, args[1]):
            return position
    raise EvalError("item not found")


@_fn(1)
def _flatten(scope: Scope, args: list[Any]) -> list[Any]:
    def walk(items: list[Any]) -> Iterable[Any]:
        for item in items:
            if isinstance(item, list):
                yield from walk(item)
            else:
                yield item

    return list(walk(to_list(args[0])))


@_fn(1)
def _keys(scope: Scope, args: list[Any]) -> list[str]:
    return sorted(to_map(args[0]))


@_fn(1)
def _values(scope: Scope, args: list[Any]) -> list[Any]:
    mapping = to_map(args[0])
    return [mapping[k] for k in sorted(mapping)]


@_fn(1, 3)
def _range(scope: Scope, args: list[Any]) -> list[Any]:
    numbers = _numbers(args)
    start: int | float = 0
    step: int | float = 1
    if len(numbers) == 1:
        limit = numbers[0]
    else:
        start, limit = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else (1 if limit >= start else -1)
    if step == 0 and start != limit:
        raise EvalError("step must not be zero")
    out: list[Any] = []
    value = start
    while (step > 0 and value < limit) or (step < 0 and value > limit):
        if len(out) == MAX_RANGE:
            raise EvalError(f"more than {MAX_RANGE} numbers")
        out.append(normal_number(value))
        value += step
    return out


@_fn(1)
def _reverse(scope: Scope, args: list[Any]) -> list[Any]:
    return list(reversed(to_list(args[0])))


@_fn(1)
def _sort(scope: Scope, args: list[Any]) -> list[str]:
    return sorted(to_str(v) for v in to_list(args[0]))


@_fn(3)
def _slice(scope: Scope, args: list[Any]) -> list[Any]:
    items, start, end = to_list(args[0]), to_int(args[1]), to_int(args[2])
    if not 0 <= start <= end <= len(items):
        raise EvalError(f"slice bounds {start}:{end} are out of range for {len(items)} elements")
    return items[start:end]


@_fn(2)
def _zipmap(scope: Scope, args: list[Any]) -> dict[str, Any]:
    keys, values = to_list(args[0]), to_list(args[1])
    if len(keys) != len(values):
        raise EvalError(f"{len(keys)} keys but {len(values)} values")
    return {to_str(k): v for k, v in zip(keys, values)}


@_fn(2)
def _chunklist(scope: Scope, args: list[Any]) -> list[Any]:
    items, size = to_list(args[0]), to_int(args[1])
    if size < 0:
        raise EvalError("the size must not be negative")
    if size == 0:
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]


def _set(items: Iterable[Any]) -> list[Any]:
    """cty's sets: no duplicates, strings and numbers in order."""
    out: list[Any] = []
    for item in items:
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    if all(isinstance(v, str) for v in out):
        return sorted(out)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out):
        return sorted(out)
    return out


@_fn(1, None)
def _setunion(scope: Scope, args: list[Any]) -> list[Any]:
    return _set(item for lst in args for item in to_list(lst))


@_fn(1, None)
def _setintersection(scope: Scope, args: list[Any]) -> list[Any]:
    first, *rest = (to_list(a) for a in args)
    return _set(item for item in first if all(any(equal(item, x) for x in other) for other in rest))


@_fn(2)
def _setsubtract(scope: Scope, args: list[Any]) -> list[Any]:
    first, second = to_list(args[0]), to_list(args[1])
    return _set(item for item in first if not any(equal(item, x) for x in second))


@_fn(1, None)
def _setproduct(scope: Scope, args: list[Any]) -> list[Any]:
    product: list[list[Any]] = [[]]
    for lst in args:
        product = [p + [item] for p in product for item in to_list(lst)]
        if len(product) > 10_000:
            raise EvalError("the product has more than 10000 elements")
    return product


@_fn(1)
def _sum(scope: Scope, args: list[Any]) -> Any:
    numbers = _numbers(to_list(args[0]))
    if not numbers:
        raise EvalError("cannot sum an empty list")
    return normal_number(math.fsum(numbers)) if any(isinstance(n, float) for n in numbers) else sum(numbers)


@_fn(1)
def _alltrue(scope: Scope, args: list[Any]) -> bool:
    return all(to_bool(v) for v in to_list(args[0]))


@_fn(1)
def _anytrue(scope: Scope, args: list[Any]) -> bool:
    return any(to_bool(v) for v in to_list(args[0]))


@_fn(1)
def _one(scope: Scope, args: list[Any]) -> Any:
    items = to_list(args[0])
    if len(items) > 1:
        raise EvalError(f"must be a list of zero or one elements, got {len(items)}")
    return items[0] if items else None


@_fn(3)
def _matchkeys(scope: Scope, args: list[Any]) -> list[Any]:
    values, keys, search = (to_list(a) for a in args)
    if len(values) != len(keys):
        raise EvalError("the values and keys lists must have the same length")
    return [v for v, k in zip(values, keys) if any(equal(k, s) for s in search)]


@_fn(1)
def _transpose(scope: Scope, args: list[Any]) -> dict[str, Any]:
    out: dict[str, list[str]] = {}
    for key, items in sorted(to_map(args[0]).items()):
        for item in to_list(items):
            out.setdefault(to_str(item), []).append(key)
    return out


# ---------------------------------------------------------------------------
# Encodings and hashes
# ---------------------------------------------------------------------------


def _json(value: Any) -> str:
    """cty's jsonencode: sorted keys, no spaces, <>& escaped as Go does."""
    text = json.dumps(_plain_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class _Number(float):
    """A float that prints as cty prints numbers (json.dumps uses float.__repr__)."""

    def __repr__(self) -> str:
        return number_text(float(self))


def _plain_numbers(value: Any) -> Any:
    if isinstance(value, float):
        return _Number(value)
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    return value


@_fn(1)
def _jsonencode(scope: Scope, args: list[Any]) -> str:
    return _json(args[0])


def _decoded(value: Any) -> Any:
    """Decoded data as evaluator values: whole floats become ints, dates become text."""
    if isinstance(value, float):
        return normal_number(value)
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, dict):
        return {_decoded_key(k): _decoded(v) for k, v in value.items()}
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return _rfc3339(stamp)
    if hasattr(value, "isoformat") and not isinstance(value, str):  # a date
        return f"{value.isoformat()}T00:00:00Z"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _decoded_key(key: Any) -> str:
    # YAML 1.1 reads `on:` as the key true; cty's YAML reader then names it "true".
    return to_str(key) if isinstance(key, (bool, int, float)) else str(key)


@_fn(1)
def _jsondecode(scope: Scope, args: list[Any]) -> Any:
    try:
        return _decoded(json.loads(to_str(args[0])))
    except ValueError as exc:
        raise EvalError(f"invalid JSON: {exc}") from None


@_fn(1)
def _yamldecode(scope: Scope, args: list[Any]) -> Any:
    from vaultdoit import yamlio

    try:
        return _decoded(yamlio.loads(to_str(args[0])))
    except ValueError as exc:
        raise EvalError(str(exc)) from None


@_fn(1)
def _base64encode(scope: Scope, args: list[Any]) -> str:
    return base64.b64encode(to_str(args[0]).encode()).decode()


@_fn(1)
def _base64decode(scope: Scope, args: list[Any]) -> str:
    try:
        return base64.b64decode(to_str(args[0]), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise EvalError("the string is not valid base64 of UTF-8 text") from None


@_fn(1)
def _base64gzip(scope: Scope, args: list[Any]) -> str:
    return base64.b64encode(gzip.compress(to_str(args[0]).encode(), mtime=0)).decode()


@_fn(1)
def _urlencode(scope: Scope, args: list[Any]) -> str:
    from urllib.parse import quote_plus

    return quote_plus(to_str(args[0]), safe="-_.~")


@_fn(1)
def _csvdecode(scope: Scope, args: list[Any]) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(to_str(args[0]))))
    if not rows:
        raise EvalError("missing header line")
    header, *body = rows
    for row in body:
        if len(row) != len(header):
            raise EvalError("a row has a different number of fields than the header")
    return [dict(zip(header, row)) for row in body]


@_fn(2)
def _textencodebase64(scope: Scope, args: list[Any]) -> str:
    text, encoding = to_str(args[0]), to_str(args[1])
    try:
        return base64.b64encode(text.encode(codecs.lookup(encoding).name)).decode()
    except (LookupError, UnicodeEncodeError) as exc:
        raise EvalError(f"cannot encode as {encoding}: {exc}") from None


@_fn(2)
def _textdecodebase64(scope: Scope, args: list[Any]) -> str:
    text, encoding = to_str(args[0]), to_str(args[1])
    try:
        return base64.b64decode(text, validate=True).decode(codecs.lookup(encoding).name)
    except (LookupError, ValueError) as exc:
        raise EvalError(f"cannot decode as {encoding}: {exc}") from None


def _hash(name: str, *, b64: bool = False) -> Function:
    def impl(scope: Scope, args: list[Any]) -> str:
        digest = hashlib.new(name, to_str(args[0]).encode())
        return base64.b64encode(digest.digest()).decode() if b64 else digest.hexdigest()

    return Function(impl, 1, 1)


_UUID_NAMESPACES = {"dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL, "oid": uuid.NAMESPACE_OID,
                    "x500": uuid.NAMESPACE_X500}


@_fn(2)
def _uuidv5(scope: Scope, args: list[Any]) -> str:
    namespace, name = to_str(args[0]), to_str(args[1])
    try:
        space = _UUID_NAMESPACES.get(namespace) or uuid.UUID(namespace)
    except ValueError:
        raise EvalError(f"{describe(namespace)} is not a UUID namespace") from None
    return str(uuid.uuid5(space, name))


# ---------------------------------------------------------------------------
# Network prefixes
# ---------------------------------------------------------------------------


def _network(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(to_str(text), strict=False)
    except ValueError as exc:
        raise EvalError(f"invalid CIDR prefix: {exc}") from None


@_fn(2)
def _cidrhost(scope: Scope, args: list[Any]) -> str:
    network, number = _network(args[0]), to_int(args[1])
    if not -network.num_addresses <= number < network.num_addresses:
        raise EvalError(f"prefix has no host {number}")
    base = network.network_address if number >= 0 else network.broadcast_address + 1
    return str(base + number)


@_fn(1)
def _cidrnetmask(scope: Scope, args: list[Any]) -> str:
    network = _network(args[0])
    if network.version != 4:
        raise EvalError("only IPv4 prefixes have a netmask")
    return str(network.netmask)


def _subnet(network: ipaddress.IPv4Network | ipaddress.IPv6Network, newbits: int, number: int) -> str:
    prefix = network.prefixlen + newbits
    if newbits < 0 or prefix > network.max_prefixlen:
        raise EvalError(f"cannot extend the prefix by {newbits} bits")
    if not 0 <= number < 2**newbits:
        raise EvalError(f"prefix extension of {newbits} bits has no network {number}")
    size = 2 ** (network.max_prefixlen - prefix)
    return str(ipaddress.ip_network((int(network.network_address) + number * size, prefix)))


@_fn(3)
def _cidrsubnet(scope: Scope, args: list[Any]) -> str:
    return _subnet(_network(args[0]), to_int(args[1]), to_int(args[2]))


@_fn(1, None)
def _cidrsubnets(scope: Scope, args: list[Any]) -> list[str]:
    network = _network(args[0])
    out, position = [], int(network.network_address)
    for bits in (to_int(a) for a in args[1:]):
        prefix = network.prefixlen + bits
        if bits < 1 or prefix > network.max_prefixlen:
            raise EvalError(f"cannot extend the prefix by {bits} bits")
        size = 2 ** (network.max_prefixlen - prefix)
        position = -(-position // size) * size  # aligned to the subnet size
        subnet = ipaddress.ip_network((position, prefix))
        if not subnet.subnet_of(network):  # type: ignore[arg-type]
            raise EvalError("not enough room in the prefix for these subnets")
        out.append(str(subnet))
        position += size
    return out


# ---------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_DATE_TOKEN = re.compile(r"'(?:[^']|'')*'|'|([A-Za-z])\1*|[^A-Za-z']+")
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _parse_timestamp(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise EvalError(f"{describe(text)} is not an RFC 3339 timestamp (like 2006-01-02T15:04:05Z)")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        micro = int((fraction or ".0")[1:7].ljust(6, "0"))
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise EvalError(f"invalid timestamp {describe(text)}: {exc}") from None


def _offset(stamp: datetime, colon: bool) -> str:
    delta = stamp.utcoffset() or timedelta()
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}" if colon else f"{sign}{hours:02d}{mins:02d}"


def _rfc3339(stamp: datetime) -> str:
    zone = "Z" if stamp.utcoffset() == timedelta() else _offset(stamp, True)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + zone


def _date_verb(token: str, stamp: datetime) -> str:
    letter, size = token[0], len(token)
    hour12 = stamp.hour % 12 or 12
    table: dict[tuple[str, int], str] = {
        ("Y", 2): f"{stamp.year % 100:02d}", ("Y", 4): f"{stamp.year:04d}",
        ("M", 1): str(stamp.month), ("M", 2): f"{stamp.month:02d}",
        ("M", 3): stamp.strftime("%b"), ("M", 4): stamp.strftime("%B"),
        ("D", 1): str(stamp.day), ("D", 2): f"{stamp.day:02d}",
        ("E", 3): stamp.strftime("%a"), ("E", 4): stamp.strftime("%A"),
        ("h", 1): str(stamp.hour), ("h", 2): f"{stamp.hour:02d}",
        ("H", 1): str(hour12), ("H", 2): f"{hour12:02d}",
        ("A", 2): "PM" if stamp.hour >= 12 else "AM", ("a", 2): "pm" if stamp.hour >= 12 else "am",
        ("m", 1): str(stamp.minute), ("m", 2): f"{stamp.minute:02d}",
        ("s", 1): str(stamp.second), ("s", 2): f"{stamp.second:02d}",
    }
    utc = stamp.utcoffset() == timedelta()
    if letter == "Z":
        zone = {1: "Z" if utc else _offset(stamp, True), 3: "UTC" if utc else _offset(stamp, False),
                4: _offset(stamp, False), 5: _offset(stamp, True)}
        if size in zone:
            return zone[size]
    elif (letter, size) in table:
        return table[(letter, size)]
    raise EvalError(f'invalid date format verb "{token}"')


@_fn(2)
def _formatdate(scope: Scope, args: list[Any]) -> str:
    spec, stamp = to_str(args[0]), _parse_timestamp(to_str(args[1]))
    out = []
    for match in _DATE_TOKEN.finditer(spec):
        token = match.group()
        if token.startswith("'"):
            if len(token) < 2 or not token.endswith("'"):
                raise EvalError("unterminated literal '")
            out.append(token[1:-1].replace("''", "'") if token != "''" else "'")
        elif token[0].isascii() and token[0].isalpha():
            out.append(_date_verb(token, stamp))
        else:
            out.append(token)
    return "".join(out)


@_fn(2)
def _timeadd(scope: Scope, args: list[Any]) -> str:
    stamp, text = _parse_timestamp(to_str(args[0])), to_str(args[1])
    body = text.lstrip("+-")
    parts = _GO_DURATION.findall(body) if body else []
    if not body or "".join(n + u for n, u in parts) != body or any(n in ("", ".") for n, _ in parts):
        raise EvalError(f"invalid duration {describe(text)} (like 1h30m)")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if text.startswith("-"):
        seconds = -seconds
    return _rfc3339(stamp + timedelta(seconds=seconds))


def _volatile(name: str, value: str) -> Function:
    """A function whose result changes from run to run: a fixed value, recorded as volatile."""

    def impl(scope: Scope, args: list[Any]) -> str:
        scope.effects.volatile.add(f"{name}()")
        return value

    return Function(impl, 0, None)


def _at_build_time(name: str) -> Function:
    """A function that reads a secret store or similar when Packer runs."""

    def impl(scope: Scope, args: list[Any]) -> Any:
        raise Unresolved(f"{name}() is read when Packer runs",
                         hint="vaultdoit needs this value before the build: use a literal or a variable")

    return Function(impl, 0, None)


# ---------------------------------------------------------------------------
# Paths and files
# ---------------------------------------------------------------------------


def _clean(path: str) -> str:
    """Go's ``filepath.Clean``: lexical, ``""`` becomes ``.``, one leading slash."""
    if not path:
        return "."
    cleaned = os.path.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@_fn(1)
def _abspath(scope: Scope, args: list[Any]) -> str:
    return _clean(os.path.join(scope.cwd, to_str(args[0])))


@_fn(1)
def _basename(scope: Scope, args: list[Any]) -> str:
    path = to_str(args[0])
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


@_fn(1)
def _dirname(scope: Scope, args: list[Any]) -> str:
    path = to_str(args[0])
    return _clean(path[: path.rfind("/") + 1])


@_fn(1)
def _pathexpand(scope: Scope, args: list[Any]) -> str:
    path = to_str(args[0])
    return os.path.expanduser(path) if path.startswith("~") else path


@_fn(1)
def _env(scope: Scope, args: list[Any]) -> str:
    if scope.env is None:
        raise EvalError("only variable defaults can read the environment",
                        hint="give a variable the default env(\"...\") and use the variable")
    return scope.env.get(to_str(args[0]), "")


def file_path(scope: Scope, value: Any) -> str:
    """The absolute path a file function reads (Packer: relative to the template folder)."""
    path = to_str(value)
    if path.startswith("~"):
        path = os.path.expanduser(path)
    return _clean(os.path.join(scope.base_dir, path))


def _read(scope: Scope, value: Any) -> bytes:
    """A file's bytes, recorded as read. A missing file is not recorded: whatever used
    instead of it (try(), can()) is a value, part of the settings that key the stage."""
    path = file_path(scope, value)
    try:
        size = os.stat(path).st_size
        if size > MAX_READ_BYTES:
            raise EvalError(f"{path} is {size // 2**20} MiB, more than the {MAX_READ_BYTES // 2**20} MiB "
                            "a file function reads")
        with open(path, "rb") as handle:
            data = handle.read()
        scope.effects.reads.add(path)
        return data
    except FileNotFoundError:
        raise MissingFile(f"no file exists at {path}", path=path, hint=_PATH_HINT) from None
    except IsADirectoryError:
        raise EvalError(f"{path} is a folder, not a file", hint=_PATH_HINT) from None
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror}") from None


def _read_text(scope: Scope, value: Any) -> str:
    data = _read(scope, value)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EvalError(f"{file_path(scope, value)} is not UTF-8 text (filebase64() reads any file)") from None


@_fn(1)
def _file(scope: Scope, args: list[Any]) -> str:
    return _read_text(scope, args[0])


@_fn(1)
def _filebase64(scope: Scope, args: list[Any]) -> str:
    return base64.b64encode(_read(scope, args[0])).decode()


def _file_hash(name: str, *, b64: bool = False) -> Function:
    def impl(scope: Scope, args: list[Any]) -> str:
        digest = hashlib.new(name, _read(scope, args[0]))
        return base64.b64encode(digest.digest()).decode() if b64 else digest.hexdigest()

    return Function(impl, 1, 1)


@_fn(1)
def _fileexists(scope: Scope, args: list[Any]) -> bool:
    path = file_path(scope, args[0])
    try:  # the answer is a value in the settings: the file's content is no input
        info = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise EvalError(f"cannot check {path}: {exc.strerror}") from None
    if os.path.isdir(path):
        raise EvalError(f"{path} is a folder, not a file")
    return bool(info)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A doublestar glob (``*``, ``**``, ``?``, ``[...]``, ``{a,b}``) as a regular expression."""
    out, i, braces = [], 0, 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise EvalError(f"invalid pattern {describe(pattern)}: unclosed [")
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        elif char == "{":
            out.append("(?:")
            braces += 1
        elif char == "}" and braces:
            out.append(")")
            braces -= 1
        elif char == "," and braces:
            out.append("|")
        elif char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(char))
        i += 1
    if braces:
        raise EvalError(f"invalid pattern {describe(pattern)}: unclosed {{")
    return re.compile("".join(out))


@_fn(2)
def _fileset(scope: Scope, args: list[Any]) -> list[str]:
    root = file_path(scope, args[0])
    matcher = _glob_regex(to_str(args[1]))
    found: list[str] = []
    visited = 0
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        visited += len(dirs) + len(files)
        if visited > MAX_FILESET:
            raise EvalError(f"{root} has more than {MAX_FILESET} entries")
        for name in files:
            full = os.path.join(folder, name)
            relative = os.path.relpath(full, root).replace(os.sep, "/")
            if matcher.fullmatch(relative) and os.path.isfile(full):
                found.append(relative)
                scope.effects.reads.add(_clean(full))
    return sorted(found)


def _templatefile(scope: Scope, nodes: list[Any]) -> Any:
    """``templatefile(path, vars)``: the file read and recorded even when ``vars`` is unknown."""
    from vaultdoit.hcl.syntax import HCLSyntaxError

    if len(nodes) != 2:
        raise EvalError(f"takes 2 arguments, got {len(nodes)}")
    try:
        path_value = nodes[0].ev(scope)
    except Unresolved as exc:
        raise exc.bare() from None
    path = file_path(scope, path_value)
    text = _read_text(scope, path_value)
    try:
        template = _parse_template(text, path)
    except HCLSyntaxError as exc:
        raise EvalError(exc.message, where=f"{path}:{exc.line}") from None
    try:
        names = to_map(nodes[1].ev(scope))
    except Unresolved as exc:
        raise exc.bare() from None
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise EvalError(f'invalid template variable name "{clip(name, 40)}"')
    inner = Scope(functions=_TEMPLATE_FUNCTIONS, base_dir=scope.base_dir, cwd=scope.cwd, names=names,
                  effects=scope.effects)
    return template.ev(inner)


@functools.lru_cache(maxsize=64)
def _parse_template(text: str, path: str) -> Node:
    from vaultdoit.hcl.syntax import parse_template

    return parse_template(text, path)


@_fn(0, None)
def _no_templatefile(scope: Scope, args: list[Any]) -> Any:
    raise EvalError("templatefile() cannot be called from inside a template file")


# ---------------------------------------------------------------------------
# try(), can() and type conversions
# ---------------------------------------------------------------------------


def _try(scope: Scope, nodes: list[Node]) -> Any:
    if not nodes:
        raise EvalError("takes 1 or more arguments, got 0")
    last: EvalError | None = None
    for node in nodes:
        try:
            return node.ev(scope)
        except EvalError as exc:  # an unknown value stays unknown, as in HCL
            last = exc
    assert last is not None
    raise EvalError(f"no expression succeeded (the last one: {last.message})")


def _can(scope: Scope, nodes: list[Node]) -> bool:
    if len(nodes) != 1:
        raise EvalError(f"takes 1 argument, got {len(nodes)}")
    try:
        nodes[0].ev(scope)
        return True
    except EvalError:
        return False


@dataclass(frozen=True)
class TypeSpec:
    """A type constraint: ``kind`` is string, number, bool, any, list, set, map, object or tuple."""

    kind: str
    element: TypeSpec | None = None
    attributes: tuple[tuple[str, TypeSpec, bool], ...] = ()  # object: (name, type, optional)
    elements: tuple[TypeSpec, ...] = ()  # tuple

    @property
    def primitive(self) -> bool:
        return self.kind in ("string", "number", "bool")

    def __str__(self) -> str:
        if self.kind in ("list", "set", "map"):
            return f"{self.kind}({self.element})"
        if self.kind == "object":
            return "object({" + ", ".join(f"{n}={t}" for n, t, _ in self.attributes) + "})"
        if self.kind == "tuple":
            return "tuple([" + ", ".join(str(t) for t in self.elements) + "])"
        return self.kind


_PRIMITIVES = ("string", "number", "bool", "any")


def type_spec(node: Node) -> TypeSpec:
    """The type constraint an expression such as ``list(string)`` spells."""
    if isinstance(node, Name) and node.name in _PRIMITIVES:
        return TypeSpec(node.name)
    if isinstance(node, Literal) and node.value in _PRIMITIVES:  # the old quoted form
        return TypeSpec(node.value)
    if isinstance(node, Call) and len(node.args) == 1:
        (arg,) = node.args
        if node.name in ("list", "set", "map"):
            return TypeSpec(node.name, element=type_spec(arg))
        if node.name == "object" and isinstance(arg, ObjectExpr):
            attributes = []
            for key, value in arg.items:
                name = key.value if isinstance(key, Literal) else None
                if not isinstance(name, str):
                    raise EvalError("object type attribute names must be plain names")
                if isinstance(value, Call) and value.name == "optional" and value.args:
                    attributes.append((name, type_spec(value.args[0]), True))
                else:
                    attributes.append((name, type_spec(value), False))
            return TypeSpec("object", attributes=tuple(attributes))
        if node.name == "tuple" and isinstance(arg, ListExpr):
            return TypeSpec("tuple", elements=tuple(type_spec(item) for item in arg.items))
    raise EvalError(f"{clip(node.loc.text, 60)} is not a type (like string, list(string) or map(number))")


def convert(value: Any, spec: TypeSpec) -> Any:
    """Convert a value to a type constraint as cty does; null stays null."""
    if value is None or spec.kind == "any":
        return value
    if spec.kind == "string":
        return to_str(value)
    if spec.kind == "number":
        return to_number(value)
    if spec.kind == "bool":
        return to_bool(value)
    if spec.kind in ("list", "set"):
        assert spec.element is not None
        if not isinstance(value, list):
            raise EvalError(f"a {spec} is required, got {describe(value)}")
        items = [convert(item, spec.element) for item in value]
        return _set(items) if spec.kind == "set" else items
    if spec.kind == "map":
        assert spec.element is not None
        if not isinstance(value, dict):
            raise EvalError(f"a {spec} is required, got {describe(value)}")
        return {k: convert(v, spec.element) for k, v in value.items()}
    if spec.kind == "object":
        if not isinstance(value, dict):
            raise EvalError(f"an object is required, got {describe(value)}")
        out = {}
        for name, attr_type, optional in spec.attributes:
            if name not in value and not optional:
                raise EvalError(f'attribute "{name}" is required')
            out[name] = convert(value.get(name), attr_type)
        return out
    if spec.kind == "tuple":
        if not isinstance(value, list) or len(value) != len(spec.elements):
            raise EvalError(f"a tuple of {len(spec.elements)} elements is required, got {describe(value)}")
        return [convert(item, t) for item, t in zip(value, spec.elements)]
    raise EvalError(f"unknown type {spec}")


def _convert_fn(scope: Scope, nodes: list[Node]) -> Any:
    if len(nodes) != 2:
        raise EvalError(f"takes 2 arguments, got {len(nodes)}")
    return convert(nodes[0].ev(scope), type_spec(nodes[1]))


def _unify(items: list[Any]) -> list[Any]:
    """A collection's elements with one type, as cty's tolist()/toset()/tomap() make them."""
    kinds = {type_name(v) for v in items if v is not None}
    if len(kinds) > 1 and kinds <= {"string", "number", "bool"}:
        return [None if v is None else to_str(v) for v in items]
    if len(kinds) > 1:
        raise EvalError(f"the elements have different types ({', '.join(sorted(kinds))})")
    return items


def _to(kind: str) -> Function:
    spec = TypeSpec(kind)

    def impl(scope: Scope, args: list[Any]) -> Any:
        value = args[0]
        if kind in ("list", "set"):
            if value is None:
                return None
            items = _unify(to_list(value))
            return _set(items) if kind == "set" else items
        if kind == "map":
            if value is None:
                return None
            mapping = to_map(value)
            return dict(zip(mapping, _unify(list(mapping.values()))))
        if isinstance(value, (list, dict)):
            raise EvalError(f"cannot convert {describe(value)} to a {kind}")
        return convert(value, spec)

    return Function(impl, 1, 1)


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

FUNCTIONS: dict[str, Function] = {
    # strings
    "upper": _strings(str.upper, 1), "lower": _strings(str.lower, 1), "title": _strings(_title, 1),
    "trimspace": _strings(str.strip, 1), "trimprefix": _strings(_trimprefix, 2),
    "trimsuffix": _strings(_trimsuffix, 2), "strrev": _strings(lambda s: s[::-1], 1),
    "startswith": _strings(str.startswith, 2), "endswith": _strings(str.endswith, 2),
    "strcontains": _strings(lambda s, sub: sub in s, 2),
    "trim": _trim, "chomp": _chomp, "indent": _indent, "split": _split, "join": _join, "replace": _replace,
    "substr": _substr, "format": _format, "formatlist": _formatlist,
    "regex": _regex, "regexall": _regexall, "regex_replace": _regex_replace,
    # numbers
    "abs": _number_fn(abs), "ceil": _number_fn(math.ceil), "floor": _number_fn(math.floor),
    "signum": _number_fn(lambda n: (n > 0) - (n < 0)), "log": _log, "pow": _pow, "max": _max, "min": _min,
    "parseint": _parseint,
    # collections
    "length": _length, "lookup": _lookup, "merge": _merge, "concat": _concat, "coalesce": _coalesce,
    "coalescelist": _coalescelist, "compact": _compact, "contains": _contains, "distinct": _distinct,
    "element": _element, "index": _index_of, "flatten": _flatten, "keys": _keys, "values": _values,
    "range": _range, "reverse": _reverse, "sort": _sort, "slice": _slice, "zipmap": _zipmap,
    "chunklist": _chunklist, "setunion": _setunion, "setintersection": _setintersection,
    "setsubtract": _setsubtract, "setproduct": _setproduct, "sum": _sum, "alltrue": _alltrue,
    "anytrue": _anytrue, "one": _one, "matchkeys": _matchkeys, "transpose": _transpose,
    # encodings and hashes
    "jsonencode": _jsonencode, "jsondecode": _jsondecode, "yamldecode": _yamldecode,
    "base64encode": _base64encode, "base64decode": _base64decode, "base64gzip": _base64gzip,
    "urlencode": _urlencode, "csvdecode": _csvdecode, "textencodebase64": _textencodebase64,
    "textdecodebase64": _textdecodebase64,
    "md5": _hash("md5"), "sha1": _hash("sha1"), "sha256": _hash("sha256"), "sha512": _hash("sha512"),
    "base64sha256": _hash("sha256", b64=True), "base64sha512": _hash("sha512", b64=True),
    "uuidv5": _uuidv5,
    # network prefixes
    "cidrhost": _cidrhost, "cidrnetmask": _cidrnetmask, "cidrsubnet": _cidrsubnet, "cidrsubnets": _cidrsubnets,
    # dates
    "formatdate": _formatdate, "timeadd": _timeadd,
    # paths and files
    "abspath": _abspath, "basename": _basename, "dirname": _dirname, "pathexpand": _pathexpand, "env": _env,
    "file": _file, "filebase64": _filebase64, "fileexists": _fileexists, "fileset": _fileset,
    "templatefile": Function(_templatefile, 2, 2, lazy=True),
    "filemd5": _file_hash("md5"), "filesha1": _file_hash("sha1"), "filesha256": _file_hash("sha256"),
    "filesha512": _file_hash("sha512"), "filebase64sha256": _file_hash("sha256", b64=True),
    "filebase64sha512": _file_hash("sha512", b64=True),
    # control and types
    "try": Function(_try, 1, None, lazy=True), "can": Function(_can, 1, 1, lazy=True),
    "convert": Function(_convert_fn, 2, 2, lazy=True),
    "tostring": _to("string"), "tonumber": _to("number"), "tobool": _to("bool"), "tolist": _to("list"),
    "toset": _to("set"), "tomap": _to("map"),
    # different on every run: a fixed value, and never part of a path
    "timestamp": _volatile("timestamp", FIXED_TIMESTAMP), "uuidv4": _volatile("uuidv4", FIXED_UUID),
    "bcrypt": _volatile("bcrypt", FIXED_BCRYPT),
    # read when Packer runs
    "vault": _at_build_time("vault"), "aws_secretsmanager": _at_build_time("aws_secretsmanager"),
    "aws_secretsmanager_raw": _at_build_time("aws_secretsmanager_raw"),
    "consul_key": _at_build_time("consul_key"),
}

# Template files cannot call templatefile() again (Packer forbids the recursion).
_TEMPLATE_FUNCTIONS = {**FUNCTIONS, "templatefile": _no_templatefile}
