"""The ansible.cfg the stages run with: the project's own, plus fact caching and speed settings.

Written at build time into the profile's state folder; the project's file is
never changed. Facts are cached on the build host (cache/facts/<stage>), so
the cache never enters an image.
"""

from __future__ import annotations

import configparser
import io
import os
from pathlib import Path

from vaultdoit.ansible_paths import PLUGIN_SETTINGS

# Ours first; the project's settings are merged over them (a team can turn any off).
# Pipelining: one SSH round trip per task instead of three, which matters most in an
# emulated VM. Forks stay at Ansible's default: every build has one host, so more
# forks buy nothing; work that can overlap inside the host runs as bounded async
# tasks in the playbooks (the seed's OPT-4), and builds overlap through doit -n.
DEFAULTS: dict[str, dict[str, str]] = {
    "defaults": {
        "gathering": "smart",
        "fact_caching": "jsonfile",
        "fact_caching_timeout": "3600",
        "host_key_checking": "False",
        "retry_files_enabled": "False",
    },
    "ssh_connection": {
        "pipelining": "True",
    },
}

# Settings that hold paths relative to the file they are written in.
PATH_KEYS = {("defaults", key) for key in (
    "roles_path", "collections_path", "collections_paths", "inventory", "vault_password_file", "log_path",
    *PLUGIN_SETTINGS)}


def render(user_cfg: Path | None, facts_dir: Path) -> str:
    """Text of the merged ansible.cfg for a stage whose facts live in ``facts_dir``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read_dict(DEFAULTS)
    parser.set("defaults", "fact_caching_connection", str(facts_dir))
    if user_cfg is not None:
        # ansible-core's INI dialect: ';' starts an inline comment (it must not become part of a path).
        user = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
        user.optionxform = str  # type: ignore[assignment,method-assign]
        user.read(user_cfg)
        for section in user.sections():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in user.items(section):
                if (section, key) in PATH_KEYS:
                    # The merged file lives elsewhere: make the project's relative paths absolute.
                    value = os.pathsep.join(
                        str((user_cfg.parent / p).resolve()) if p and not os.path.isabs(os.path.expanduser(p)) else p
                        for p in value.split(os.pathsep))
                parser.set(section, key, value)
    out = io.StringIO()
    out.write("# Written by vaultdoit for one stage build; edit the project's ansible.cfg instead.\n")
    parser.write(out)
    return out.getvalue()


def write(user_cfg: Path | None, facts_dir: Path, target: Path) -> Path:
    """Write the merged file atomically and return its path."""
    facts_dir.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(render(user_cfg, facts_dir))
    os.replace(tmp, target)
    return target
