"""The project's only YAML reader: Ansible's tags, clear errors with file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vaultdoit.errors import PlaybookError

__all__ = ["AnsibleLoader", "load_yaml", "loads"]


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AnsibleLoader(_BaseLoader):
    """Safe YAML loader that also accepts Ansible's ``!vault`` and ``!unsafe`` tags."""


def _construct_vault(loader: Any, node: yaml.Node) -> str:
    # The ciphertext stays opaque: nothing here needs the secret, only the bytes.
    return str(loader.construct_scalar(node))


def _construct_unsafe(loader: Any, node: yaml.Node) -> Any:
    # !unsafe only tells Ansible not to template the value; the data itself is plain.
    if isinstance(node, yaml.ScalarNode):
        return str(loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


for _tag in ("!vault", "!vault-encrypted"):
    AnsibleLoader.add_constructor(_tag, _construct_vault)
AnsibleLoader.add_constructor("!unsafe", _construct_unsafe)


def load_yaml(path: Path) -> Any:
    """Parse one YAML file (Ansible tags allowed); errors name the file, line and column."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PlaybookError("file not found", file=path, hint="check the path") from None
    except OSError as exc:
        raise PlaybookError(f"cannot read the file: {exc.strerror}", file=path,
                            hint="check that it is a readable file") from None
    try:
        # Bytes, not text: the YAML reader detects UTF-8/UTF-16 and reports bad bytes itself.
        return yaml.load(data, Loader=AnsibleLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise PlaybookError(_yaml_problem(exc), file=path, hint="fix the YAML syntax") from exc
    except yaml.YAMLError as exc:
        raise PlaybookError(f"invalid YAML: {exc}", file=path, hint="fix the YAML syntax") from exc


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``invalid YAML: <problem> at line L column C`` (1-based, as editors count)."""
    problem = exc.problem or exc.context or "syntax error"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {problem} at line {mark.line + 1} column {mark.column + 1}"


def loads(text: str) -> Any:
    """Parse YAML text (Ansible tags allowed); a ValueError says what is wrong, in one line."""
    try:
        return yaml.load(text, Loader=AnsibleLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ValueError(_yaml_problem(exc)) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from None
