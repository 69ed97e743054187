"""The project's only YAML reader: Ansible's tags, line numbers, bounded work, clear errors.

Hostile or broken input must fail fast with one line: a file over ``MAX_BYTES``,
more than ``MAX_NODES`` nodes, nesting deeper than ``MAX_DEPTH``, or aliases that
expand past ``MAX_EXPANDED`` nodes (the "billion laughs": the parsed graph is small,
but anything that walks the data would visit every copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from vaultdoit.errors import PlaybookError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_EXPANDED", "MAX_NODES", "AnsibleLoader", "YamlList", "YamlMap",
           "line_of", "load_yaml", "loads"]

MAX_BYTES = 2 * 1024 * 1024  # the largest real-world vars files are a few hundred KiB
MAX_NODES = 100_000  # composing costs about 5 µs and 350 bytes per node
MAX_DEPTH = 100  # playbooks nest about 10 deep
MAX_EXPANDED = 500_000  # nodes once every alias is expanded

_LIMIT_HINT = "split the file or simplify it; vaultdoit reads at most {}"
# Files bigger than this are counted in a quick pass over the parser's events before
# any node is built (5-10 times cheaper per node); smaller ones cannot hold many nodes.
_PRESCAN_BYTES = 128 * 1024
_EventLoader: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


class YamlMap(dict[Any, Any]):
    """A YAML mapping that knows its line (1-based) and the line of each key."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class YamlList(list[Any]):
    """A YAML sequence that knows its line (1-based) and the line of each item."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


def line_of(data: Any, key: Any = None) -> int:
    """The line of ``data[key]`` (or of ``data``) when it came from ``load_yaml``; else 0.

    ``key`` is a mapping key, or an index into a sequence.
    """
    if isinstance(data, YamlMap):
        return data.lines.get(key, data.line) if key is not None else data.line
    if isinstance(data, YamlList):
        return data.lines[key] if isinstance(key, int) and 0 <= key < len(data.lines) else data.line
    return 0


class _Limit(Exception):
    """A bound was exceeded while reading; becomes a PlaybookError naming the line."""

    def __init__(self, problem: str, line: int, hint: str) -> None:
        super().__init__(problem)
        self.problem, self.line, self.hint = problem, line, hint


class _BoundedComposer(Composer):
    """PyYAML's composer, counting nodes and depth as it goes (it stops at the first excess)."""

    def __init__(self) -> None:
        Composer.__init__(self)
        self._nodes = 0
        self._depth = 0
        self.saw_alias = False

    peek_event: Any  # from the parser it is mixed with

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else 0
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Limit(f"more than {MAX_NODES} YAML nodes", line, _LIMIT_HINT.format(f"{MAX_NODES} nodes"))
        if isinstance(event, AliasEvent):
            self.saw_alias = True
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"YAML nested deeper than {MAX_DEPTH} levels", line,
                             _LIMIT_HINT.format(f"{MAX_DEPTH} levels"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _AnsibleConstructor(SafeConstructor):
    """Safe constructor with Ansible's tags and mappings that remember their lines."""

    def construct_line_map(self, node: MappingNode) -> Any:
        data = YamlMap(node.start_mark.line + 1)
        yield data
        data.update(self.construct_mapping(node))
        # After construct_mapping: merge keys ('<<') have been flattened into node.value.
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                data.lines.setdefault(key_node.value, value_node.start_mark.line + 1)

    def construct_line_list(self, node: SequenceNode) -> Any:
        data = YamlList(node.start_mark.line + 1)
        yield data
        data.extend(self.construct_sequence(node))
        data.lines = [item.start_mark.line + 1 for item in node.value]

    def construct_vault(self, node: Node) -> str:
        # The ciphertext stays opaque: nothing here needs the secret, only the bytes.
        return str(self.construct_scalar(node))  # type: ignore[arg-type]

    def construct_unsafe(self, node: Node) -> Any:
        # !unsafe only tells Ansible not to template the value; the data itself is plain.
        if isinstance(node, ScalarNode):
            return str(self.construct_scalar(node))
        if isinstance(node, SequenceNode):
            return self.construct_sequence(node, deep=True)
        return self.construct_mapping(node, deep=True)  # type: ignore[arg-type]


_add: Any = _AnsibleConstructor.add_constructor  # the stubs do not allow a subclass here
_add("tag:yaml.org,2002:map", _AnsibleConstructor.construct_line_map)
_add("tag:yaml.org,2002:seq", _AnsibleConstructor.construct_line_list)
for _tag in ("!vault", "!vault-encrypted"):
    _add(_tag, _AnsibleConstructor.construct_vault)
_add("!unsafe", _AnsibleConstructor.construct_unsafe)

_CParser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", None)

if _CParser is not None:

    class AnsibleLoader(_BoundedComposer, _CParser, _AnsibleConstructor, Resolver):
        """libyaml's parser under the bounded composer (composing in Python costs the same)."""

        def __init__(self, stream: bytes | str) -> None:
            _CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _AnsibleConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class AnsibleLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,  # type: ignore[no-redef]
                        _BoundedComposer, _AnsibleConstructor, Resolver):
        """The pure-Python parser under the bounded composer."""

        def __init__(self, stream: bytes | str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            _BoundedComposer.__init__(self)
            _AnsibleConstructor.__init__(self)
            Resolver.__init__(self)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Fail when aliases expand ``root`` past MAX_EXPANDED nodes or refer to themselves.

    Sizes are memoised per node, so this costs one visit per node of the parsed graph,
    however many times aliases repeat it. Iterative: no recursion limit to hit.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current path from the root: an alias to one is a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_EXPANDED:
                raise _Limit(f"YAML aliases expand to more than {MAX_EXPANDED} nodes",
                             node.start_mark.line + 1, "use fewer nested aliases")
            sizes[key] = size
        elif key not in sizes:
            if key in open_nodes:
                raise _Limit("a YAML alias refers to a node that contains it", node.start_mark.line + 1,
                             "remove the recursive alias")
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _prescan(data: bytes | str) -> None:
    """Fail on too many nodes or too deep nesting from the event stream alone."""
    nodes = depth = 0
    for event in yaml.parse(data, Loader=_EventLoader):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, (ScalarEvent, AliasEvent, CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise _Limit(f"more than {MAX_NODES} YAML nodes", line, _LIMIT_HINT.format(f"{MAX_NODES} nodes"))
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Limit(f"YAML nested deeper than {MAX_DEPTH} levels", line,
                                 _LIMIT_HINT.format(f"{MAX_DEPTH} levels"))
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def load_yaml(path: Path) -> Any:
    """Parse one YAML file (Ansible tags allowed); errors name the file, line and column."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise PlaybookError("file not found", file=path, hint="check the path") from None
    except OSError as exc:
        raise PlaybookError(f"cannot read the file: {exc.strerror}", file=path,
                            hint="check that it is a readable file") from None
    if len(data) > MAX_BYTES:
        raise PlaybookError(f"YAML file larger than {MAX_BYTES // (1024 * 1024)} MiB", file=path,
                            hint=_LIMIT_HINT.format(f"{MAX_BYTES // (1024 * 1024)} MiB per file"))
    # Bytes, not text: the YAML reader detects UTF-8/UTF-16 and reports bad bytes itself.
    try:
        return _parse(data)
    except _Limit as exc:
        raise PlaybookError(f"{exc.problem} at line {exc.line}", file=path, hint=exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        raise PlaybookError(_yaml_problem(exc), file=path, hint="fix the YAML syntax") from exc
    except yaml.reader.ReaderError as exc:  # bytes that are not text in the encoding
        raise PlaybookError(f"not UTF-8 text (byte 0x{exc.character:02x} at byte {exc.position})"
                            if isinstance(exc.character, int) else "not UTF-8 text",
                            file=path, hint="save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"invalid YAML: {_one_line(exc)}", file=path, hint="fix the YAML syntax") from exc


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def loads(text: str) -> Any:
    """Parse YAML text (a template's ``yamldecode()``) within the same bounds as files.

    Raises ValueError with a one-line message.
    """
    if len(text) > MAX_BYTES:
        raise ValueError(f"YAML text larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return _parse(text)
    except _Limit as exc:
        raise ValueError(f"{exc.problem} at line {exc.line}") from None
    except yaml.MarkedYAMLError as exc:
        raise ValueError(_yaml_problem(exc)) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {_one_line(exc)}") from None


def _parse(data: bytes | str) -> Any:
    """One YAML document, bounded (see the module's docstring); raises _Limit or YAMLError."""
    loader = AnsibleLoader(data)
    try:
        if len(data) > _PRESCAN_BYTES:
            _prescan(data)
        node = loader.get_single_node()
        if node is None:
            return None
        if loader.saw_alias:
            _check_expansion(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own bound, met while scanning ahead
            line = exc.problem_mark.line + 1 if exc.problem_mark else 0
            raise _Limit(f"YAML nested deeper than {MAX_DEPTH} levels", line,
                         _LIMIT_HINT.format(f"{MAX_DEPTH} levels")) from None
        raise
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``invalid YAML: <problem> at line L column C`` (1-based, as editors count)."""
    problem = exc.problem or exc.context or "syntax error"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {problem} at line {mark.line + 1} column {mark.column + 1}"
