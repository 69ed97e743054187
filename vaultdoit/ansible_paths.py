"""Where ansible-core looks for things: ansible.cfg path settings, plugin folders, collections.

Mirrors ansible-core's rules so that a playbook's closure holds the files Ansible
will load: a setting from the environment wins over ansible.cfg (whose relative
paths are relative to the cfg's folder); collections are searched in the
playbooks' ``collections/`` folders first, then the configured roots, then the
Python path (where the ``ansible`` package bundles its collections).
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from vaultdoit.errors import PlaybookError

# Folders ansible-core loads plugins from when they sit beside a playbook or in a role.
PLUGIN_FOLDERS = ("library", "module_utils", "action_plugins", "become_plugins", "cache_plugins",
                  "callback_plugins", "cliconf_plugins", "connection_plugins", "doc_fragments",
                  "filter_plugins", "httpapi_plugins", "inventory_plugins", "lookup_plugins",
                  "netconf_plugins", "shell_plugins", "strategy_plugins", "terminal_plugins",
                  "test_plugins", "vars_plugins")

# [defaults] keys of ansible.cfg naming plugin folders, with the variable that overrides each.
PLUGIN_SETTINGS = {
    "library": "ANSIBLE_LIBRARY", "module_utils": "ANSIBLE_MODULE_UTILS",
    "action_plugins": "ANSIBLE_ACTION_PLUGINS", "become_plugins": "ANSIBLE_BECOME_PLUGINS",
    "cache_plugins": "ANSIBLE_CACHE_PLUGINS", "callback_plugins": "ANSIBLE_CALLBACK_PLUGINS",
    "cliconf_plugins": "ANSIBLE_CLICONF_PLUGINS", "connection_plugins": "ANSIBLE_CONNECTION_PLUGINS",
    "doc_fragment_plugins": "ANSIBLE_DOC_FRAGMENT_PLUGINS", "filter_plugins": "ANSIBLE_FILTER_PLUGINS",
    "httpapi_plugins": "ANSIBLE_HTTPAPI_PLUGINS", "inventory_plugins": "ANSIBLE_INVENTORY_PLUGINS",
    "lookup_plugins": "ANSIBLE_LOOKUP_PLUGINS", "netconf_plugins": "ANSIBLE_NETCONF_PLUGINS",
    "strategy_plugins": "ANSIBLE_STRATEGY_PLUGINS", "terminal_plugins": "ANSIBLE_TERMINAL_PLUGINS",
    "test_plugins": "ANSIBLE_TEST_PLUGINS", "vars_plugins": "ANSIBLE_VARS_PLUGINS",
}

# A fully qualified collection reference: ns.coll.resource (or ns.coll.sub.resource).
FQCR = re.compile(r"\w+(\.\w+){2,}")
# Collections that are ansible-core itself, never a folder.
SYNTHETIC = frozenset({"ansible.builtin", "ansible.legacy"})
# Files of a collection that change what its roles and plugins do.
COLLECTION_FILES = ("galaxy.yml", "MANIFEST.json", "meta/runtime.yml")


def _norm(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


class AnsibleSettings:
    """Path settings of one ansible.cfg (optional) under an environment."""

    def __init__(self, cfg: Path | None, env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.env = env
        self._parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
        if cfg is not None:
            # Same INI dialect as ansible-core (';' starts inline comments); no '%' interpolation.
            try:
                self._parser.read_string(cfg.read_text(encoding="utf-8"), source=str(cfg))
            except (configparser.Error, UnicodeDecodeError) as exc:
                problem = str(exc).splitlines()[0]
                raise PlaybookError(f"invalid ansible.cfg: {problem}", file=cfg,
                                    hint="fix the INI syntax") from exc

    def _expand(self, text: str) -> str:
        """``~`` and ``$VAR`` as the build's environment would expand them."""
        text = text.strip()
        if text.startswith("~"):
            home = self.env.get("HOME") or os.path.expanduser("~")
            text = home + text[1:] if text == "~" or text.startswith("~/") else os.path.expanduser(text)
        return re.sub(r"\$(\w+)|\$\{(\w+)\}",
                      lambda m: self.env.get(m.group(1) or m.group(2), m.group(0)), text)

    def paths(self, keys: Sequence[str], env_names: Sequence[str]) -> list[Path] | None:
        """A ``:``-separated path setting; None when neither the environment nor the cfg sets it.

        Environment values are relative to the working folder, cfg values to the cfg's folder.
        """
        for name in env_names:
            if name in self.env:
                return [_norm(self._expand(part)) for part in self.env[name].split(os.pathsep) if part.strip()]
        if self.cfg is None:
            return None
        for key in keys:
            value = self._parser.get("defaults", key, fallback=None)
            if value is not None:
                return [_norm(self.cfg.parent / self._expand(part))
                        for part in value.split(os.pathsep) if part.strip()]
        return None

    def roles_path(self) -> list[Path]:
        return self.paths(["roles_path"], ["ANSIBLE_ROLES_PATH"]) or []

    def plugin_folders(self) -> list[Path]:
        """Every plugin folder the cfg or the environment names (existing or not)."""
        found: list[Path] = []
        for key, env_name in PLUGIN_SETTINGS.items():
            found += self.paths([key], [env_name]) or []
        return found

    def home(self) -> Path:
        configured = self.paths(["home"], ["ANSIBLE_HOME"])
        return configured[0] if configured else _norm(self._expand("~/.ansible"))

    def collection_roots(self) -> list[Path]:
        """Configured collection roots; ansible-core's defaults when nothing sets them."""
        # collections_paths/ANSIBLE_COLLECTIONS_PATHS: the spelling before ansible-core 2.19.
        configured = self.paths(["collections_path", "collections_paths"],
                                ["ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"])
        if configured is not None:
            return configured
        return [self.home() / "collections", Path("/usr/share/ansible/collections")]

    def configured_in_cfg(self) -> list[Path]:
        """Collection roots the project's ansible.cfg names and Ansible will use (where to install)."""
        if self.cfg is None or any(name in self.env for name in ("ANSIBLE_COLLECTIONS_PATH",
                                                                 "ANSIBLE_COLLECTIONS_PATHS")):
            return []
        for key in ("collections_path", "collections_paths"):
            value = self._parser.get("defaults", key, fallback=None)
            if value is not None:
                return [_norm(self.cfg.parent / self._expand(p)) for p in value.split(os.pathsep) if p.strip()]
        return []


def _root(path: Path) -> Path:
    """A collections root may be named with or without its ``ansible_collections`` folder."""
    return path.parent if path.name == "ansible_collections" else path


class Collections:
    """Finds installed collections the way ansible-core's collection finder does."""

    def __init__(self, configured: Sequence[Path]) -> None:
        self.playbook_roots: list[Path] = []  # <playbook dir>/collections, in the order met
        self.configured = [_root(p) for p in configured]
        self._found: dict[str, Path | None] = {}
        self._bundled: dict[str, Path | None] = {}

    def add_playbook_dir(self, folder: Path) -> None:
        root = folder / "collections"
        if root not in self.playbook_roots:
            self.playbook_roots.append(root)
            self._found = {}  # the new root comes before the configured ones

    def roots(self) -> list[Path]:
        return [*self.playbook_roots, *self.configured]

    def find(self, name: str) -> Path | None:
        """The folder of collection ``ns.coll`` in the first root that has it."""
        if name not in self._found:
            namespace, _, coll = name.partition(".")
            self._found[name] = next(
                (p for p in (r / "ansible_collections" / namespace / coll for r in self.roots()) if p.is_dir()),
                None)
        return self._found[name]

    def bundled(self, name: str) -> Path | None:
        """The collection as shipped inside a Python package (``ansible``): a tool, not an input."""
        if name not in self._bundled:
            namespace, _, coll = name.partition(".")
            self._bundled[name] = next(
                (p for p in (Path(entry) / "ansible_collections" / namespace / coll
                             for entry in sys.path if entry) if p.is_dir()), None)
        return self._bundled[name]


def split_fqcr(name: str) -> tuple[str, str] | None:
    """``ns.coll.a.b`` -> (``ns.coll``, ``a/b``); None when ``name`` is not fully qualified."""
    if not FQCR.fullmatch(name):
        return None
    parts = name.split(".")
    return f"{parts[0]}.{parts[1]}", "/".join(parts[2:])
