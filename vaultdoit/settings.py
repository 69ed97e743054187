"""The table of vault.toml's settings: name, table, type, default, check and help of each.

One description drives reading and checking (config.py) and the docs:
``python -m vaultdoit.settings --markdown > docs/configuration.md``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vaultdoit.config import CONFINE_HINT
from vaultdoit.model import DEFAULT_APT_PORT

ALLOWED_PATHS_ENV = "VAULTDOIT_ALLOWED_PATHS"
PROFILE_ENV = "VAULTDOIT_PROFILE"
SIGNING_KEY_ENV = "VAULTDOIT_SIGNING_KEY"
REMOTE_CACHE_ENV = "VAULTDOIT_REMOTE_CACHE"
REMOTE_PUSH_ENV = "VAULTDOIT_REMOTE_PUSH"
BUILD_KEY_ENV = "VAULTDOIT_BUILD_KEY"
ACCESS_KEY_ENV = "VAULTDOIT_ACCESS_KEY"
COMPRESSIONS = ("zstd", "zlib", "none")
ACCELERATORS = ("auto", "kvm", "tcg")

# Where a setting may be written.
FILE = "file"            # the top level of vault.toml only
PROJECT = "project"      # the top level, or a [profiles.<name>] table that overrides it
FINAL = "final"          # [final]
VERIFY = "verify"        # [verify]
BOOTSTRAP = "bootstrap"  # [bootstrap.<stage>]
STAGE = "stage"          # [stages.<stage>]
VARIANT = "variant"      # [variants.<variant>]

# What a path setting names: inputs are only read (anywhere); outputs are written (confined).
INPUT, INPUT_DIR, OUTPUT, FOLDER = "input", "input folder", "output", "folder"


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) for i in v)



def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


@dataclass(frozen=True)
class Kind:
    """A setting's type: which TOML values it takes, how errors and the docs name it."""

    label: str                     # in errors: "<key> must be <label>, not <value>"
    doc: str                       # in the docs' type column
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda v: v
    shape: str = "value"           # value, table (keys of another scope), tables (named tables), free


STRING = Kind("a string", "string", _is_str)
INTEGER = Kind("an integer", "integer", _is_int)
SECONDS = Kind("a number of seconds", "seconds", _is_number, float)
BOOLEAN = Kind("true or false", "boolean", _is_bool)
STRINGS = Kind("a list of strings", "list of strings", _is_strs, tuple)
TABLE = Kind("a table", "table", _is_table, shape="table")
TABLES = Kind("a table of tables", "tables", _is_table, shape="tables")
FREE = Kind("a table", "table", _is_table, shape="free")


@dataclass(frozen=True)
class Check:
    """A rule on a value: when ``ok`` fails, "<key> must be <must>, not <value>"."""

    ok: Callable[[Any], bool]
    must: str
    doc: str | None = None  # for the docs' type column (default: ``must``)


def one_of(*choices: str) -> Check:
    names = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return Check(lambda v: v in choices, names)


def between(low: float, high: float) -> Check:
    return Check(lambda v: low <= v <= high, f"between {low} and {high}", f"{low}–{high}")


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f"at least {low}", f"≥ {low}")


def matching(pattern: str, must: str, doc: str | None = None) -> Check:
    """Every string (of a string or a list of strings) matches ``pattern``."""
    regex = re.compile(pattern)
    return Check(lambda v: all(regex.fullmatch(i) for i in ([v] if isinstance(v, str) else v)), must, doc)


NON_EMPTY = matching(r".+", "a non-empty string", "")
USER = matching(r"[a-z_][a-z0-9_-]{0,31}", "a user name (lower case letters, digits, _ and -)", "user name")
FILE_NAME = Check(lambda v: v not in ("", ".", "..") and "/" not in v and not any(ord(c) < 32 for c in v),
                  "a plain file name (no / or ..)", "file name")
SIZE = matching(r"[1-9][0-9]*[KkMmGgTt]?", 'a size such as "3G" or "3072M"', "size (`3G`, `3072M`)")
APT_PROXY = Check(lambda v: v in ("auto", "off") or re.fullmatch(r"https?://[^\s/]+.*", v) is not None,
                  "auto, off or an http:// or https:// URL", "auto, off or a URL")
NAME = matching(r"[A-Za-z0-9][A-Za-z0-9._+-]*", "a name (letters, digits, . _ + -)", "name")
VARIANTS = matching(r"[A-Za-z0-9][A-Za-z0-9._-]*(\s*,\s*[A-Za-z0-9][A-Za-z0-9._-]*)*",
                    '"all", a variant name or names separated by commas', "`all` or names")
# <host>[:port]/<repository>: the repository in lower case, as OCI names are.
REPOSITORY = matching(r"[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+",
                      "<registry>/<repository>, e.g. registry.example.com/team/vault-stages",
                      "`<registry>/<repository>`")
CHUNK = Check(lambda v: bool(re.fullmatch(r"[1-9][0-9]*[KkMmGgTt]?", v)) and size_bytes(v) >= 2**20,
              'a size of at least 1M, such as "256M" or "1G"', "size, at least `1M`")


def size_bytes(text: str) -> int:
    """"3G" -> bytes (K, M, G, T are powers of 1024; no suffix: bytes)."""
    scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}.get(text[-1:].lower(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


@dataclass(frozen=True)
class Setting:
    """One key of vault.toml: where it goes, its type, default, check and meaning."""

    name: str
    scope: str
    kind: Kind
    default: Any
    help: str
    default_doc: str | None = None  # the default as the docs show it, where it depends on the project
    check: Check | None = None
    path: str | None = None         # INPUT, INPUT_DIR, OUTPUT or FOLDER: a path relative to the project
    required: bool = False
    table: str | None = None        # TABLE/TABLES: the scope of the keys inside
    example: str | None = None      # a valid line, for the fix of a type error
    hint: str | None = None         # the fix for a value that fails the check

    @property
    def shown_default(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if self.required:
            return "required"
        if self.default is None or self.kind.shape != "value":
            return "—"
        value = self.default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return f"`{toml_text(list(value) if isinstance(value, tuple) else value)}`"


SETTINGS: tuple[Setting, ...] = (
    Setting("profile", FILE, STRING, None,
            "the profile `doit` builds; override with `doit final_image profile=NAME` or `VAULTDOIT_PROFILE=NAME`",
            example='profile = "mini"'),
    Setting("profiles", FILE, TABLES, None,
            "one table per pipeline; each overrides the top-level settings key by key (see below)",
            table=PROJECT, default_doc="—"),
    Setting("accelerator", PROJECT, STRING, "auto",
            "`auto` (KVM if a Linux kernel boots under it to its console, checked once per host boot and "
            "kept in `cache/probe/accel.json`; else TCG, with one line saying why), `kvm`, `tcg`",
            check=one_of(*ACCELERATORS), hint='use accelerator = "auto", "kvm" or "tcg"'),
    Setting("packer_dir", PROJECT, STRING, None,
            "folder of `*.pkr.hcl` loaded as one Packer configuration",
            default_doc="`packer/<profile>` or `packer`", check=NON_EMPTY, path=INPUT_DIR,
            example='packer_dir = "packer/mini"'),
    Setting("var_files", PROJECT, STRINGS, (),
            "extra `*.pkrvars.hcl` passed with `-var-file` (`*.auto.pkrvars.hcl` are loaded anyway)",
            check=NON_EMPTY, path=INPUT, example='var_files = ["ci.pkrvars.hcl"]'),
    Setting("variables", PROJECT, FREE, None,
            "Packer variable values, passed with `-var` (see below)"),
    Setting("ansible_cfg", PROJECT, STRING, None,
            "the `ansible.cfg` the stages use (`ANSIBLE_CONFIG`)",
            default_doc="`ansible/ansible.cfg` if present", check=NON_EMPTY, path=INPUT,
            example='ansible_cfg = "ansible/ansible.cfg"'),
    Setting("image_name", PROJECT, STRING, None,
            "final image: `build/final/<image_name>.qcow2`; a plain file name",
            default_doc="`vault-<profile>` or the folder name", check=FILE_NAME,
            hint="the image always goes to build/final/; give only its name", example='image_name = "vault-mini"'),
    Setting("requirements", PROJECT, STRING, None,
            "pinned requirements (with hashes) downloaded by `cache:wheels` into `cache/wheels/`",
            check=NON_EMPTY, path=INPUT, example='requirements = "python/requirements.txt"'),
    Setting("build_user", PROJECT, STRING, "vault",
            "user the bootstrapped base creates for provisioning", check=USER),
    Setting("build_key", PROJECT, STRING, "build/keys/build_ed25519",
            "SSH key the stages log in with, created by the `keys` task (its folder is made private)",
            check=NON_EMPTY, path=OUTPUT),
    Setting("access_key", PROJECT, STRING, "build/keys/access_ed25519",
            "SSH key installed for the image's user, created by the `keys` task (its folder is made private)",
            check=NON_EMPTY, path=OUTPUT),
    Setting("top", PROJECT, STRING, None,
            "the stage flattened into the final image", default_doc="the only leaf stage", check=NON_EMPTY,
            example='top = "final"'),
    Setting("apt_proxy", PROJECT, STRING, "auto",
            "`auto` (the build's own apt-cacher-ng when installed), `off`, or the URL of an external proxy",
            check=APT_PROXY, hint='use apt_proxy = "auto", "off" or "http://HOST:PORT"'),
    Setting("apt_proxy_port", PROJECT, INTEGER, DEFAULT_APT_PORT,
            "port of the build's own apt-cacher-ng on 127.0.0.1 (apt-cacher-ng cannot bind 32768 and above)",
            check=between(1024, 32767), hint=f"use the default {DEFAULT_APT_PORT}"),
    Setting("allowed_paths", PROJECT, STRINGS, (),
            "folders outside the project that vaultdoit may create files in or delete from (see "
            f"[Paths](#paths)); also `{ALLOWED_PATHS_ENV}` (`:`-separated absolute paths)",
            check=NON_EMPTY, path=FOLDER, example='allowed_paths = ["/srv/images"]'),
    Setting("variants", PROJECT, TABLES, None,
            "variants of the profile's image, each a set of Packer variable values (see below)", table=VARIANT),
    Setting("variant", PROJECT, STRING, "all",
            "the variants plain `doit`, `final_image` and `verify` build: `all`, a name, or names separated by "
            "commas; override with `doit final_image variant=NAME[,NAME]` or `VAULTDOIT_VARIANT` (the tasks of "
            "every variant exist either way: `doit final_image:<variant>`)",
            check=VARIANTS, example='variant = "demo"'),
    Setting("memory", PROJECT, INTEGER, None,
            "MiB of memory of each build VM (the template's variable of its `memory`, or `memory`, where it "
            "declares one); in no stage's key; a value the project gives that variable itself (`[variables]`, "
            "a variant's, a var file, `PKR_VAR_`, `var.X=`) wins",
            default_doc="from the host: a quarter of its memory, 1024–4096", check=at_least(128),
            example="memory = 2048"),
    Setting("cpus", PROJECT, INTEGER, None,
            "virtual CPUs of each build VM (the template's variable of its `cpus`, or `cpus`) and of the boot "
            "test's VM; in no stage's key; a value the project gives that variable itself wins",
            default_doc="from the host: half its cores, at least 1", check=at_least(1), example="cpus = 2"),
    Setting("stall_timeout", PROJECT, SECONDS, 0.0,
            "seconds without console output, Packer output (other than \"Waiting for SSH\"), disk writes "
            "or SSH progress before a stage's or the boot test's VM is stopped; `0`: automatic, 300 for a "
            "kernel booted directly, 900 for a disk image with its own boot loader, 1800 for an ISO installer "
            "(which may print nothing for minutes)",
            check=at_least(0), hint="use 0 (automatic) or a number of seconds"),
    Setting("signing_key", PROJECT, STRING, None,
            "SSH private key (or the `.pub` of a key held by ssh-agent) that signs the final image's checksum "
            "file and SBOM (`ssh-keygen -Y sign`, namespace `vaultdoit`; see [signing](signing.md)); relative to "
            f"the project, `~` allowed; never created by vaultdoit; `{SIGNING_KEY_ENV}` overrides it",
            default_doc="no signing", check=NON_EMPTY, example='signing_key = "~/.ssh/release_ed25519"'),
    Setting("keep_failed", PROJECT, BOOLEAN, False,
            "keep a failed stage's VM disk in `build/<profile>/failed/<stage>/` (never as the stage's image: "
            "the previous good one stays) and print how to boot it with `vaultdoit run failed:<stage>`; Packer "
            "then runs with `-on-error=abort`, so it leaves the disk; also `doit final_image keep_failed=1`",
            example="keep_failed = true"),
    Setting("remote_cache", PROJECT, STRING, None,
            "an OCI registry repository shared by a team as a stage cache: each needed stage is looked up by "
            "its key and pulled instead of built; a stage built here is pushed (see [Remote cache]"
            f"(#remote-cache)); `{REMOTE_CACHE_ENV}` overrides it (`off`: no remote cache on this machine)",
            check=REPOSITORY, hint='write e.g. remote_cache = "registry.example.com/team/vault-stages"',
            example='remote_cache = "registry.example.com/team/vault-stages"'),
    Setting("remote_push", PROJECT, BOOLEAN, True,
            "push the stages built here to `remote_cache`; per machine, `{env}=0` or `doit ... remote_push=0` "
            "turn it off and `{env}=1` on".format(env=REMOTE_PUSH_ENV),
            example="remote_push = false"),
    Setting("remote_chunk_size", PROJECT, STRING, "256M",
            "largest layer of a stage in the registry: a bigger image is stored as several layers "
            "(registries refuse multi-GB blobs)", check=CHUNK, hint='use a size such as "256M" or "1G"'),
    Setting("final", PROJECT, TABLE, None, "how the final image is made (see below)", table=FINAL),
    Setting("verify", PROJECT, TABLE, None, "the boot test of the final image (see below)", table=VERIFY),
    Setting("bootstrap", PROJECT, TABLES, None, "stages built without Packer (see below)", table=BOOTSTRAP),
    Setting("stages", PROJECT, TABLES, None, "per-stage settings (see below)", table=STAGE),

    Setting("compression", FINAL, STRING, "zstd",
            '`"zstd"`, `"zlib"` for readers older than QEMU 5.1, or `"none"`',
            check=one_of(*COMPRESSIONS), hint='use "zstd" (fast) or "zlib" (readable by QEMU < 5.1)'),
    Setting("coroutines", FINAL, INTEGER, 8, "parallel `qemu-img convert` workers", check=between(1, 16)),

    Setting("user", VERIFY, STRING, "vault", "user the test logs in as", check=USER),
    Setting("key", VERIFY, STRING, None, "private SSH key the test logs in with (only read)",
            default_doc="the access key", check=NON_EMPTY, path=INPUT, example='key = "keys/test_ed25519"'),
    Setting("units", VERIFY, STRINGS, (), "systemd units that must be active",
            example='units = ["ssh.service"]'),
    Setting("checks", VERIFY, STRINGS, (), "shell commands run over SSH that must exit 0",
            example='checks = ["test -f /etc/hostname"]'),
    Setting("boot_timeout", VERIFY, SECONDS, 600.0, "seconds the image may take to boot",
            check=Check(lambda v: v > 0, "more than 0")),
    Setting("memory", VERIFY, INTEGER, 1024, "MiB of memory of the test VM", check=at_least(128)),

    Setting("tool", BOOTSTRAP, STRING, "mmdebstrap", "the only bootstrap tool so far",
            check=one_of("mmdebstrap"), hint='use tool = "mmdebstrap" or build the stage with Packer'),
    Setting("suite", BOOTSTRAP, STRING, "bookworm", "Debian suite", check=NAME),
    Setting("packages", BOOTSTRAP, STRING, None, "file with one package per line",
            required=True, check=NON_EMPTY, path=INPUT, example='packages = "packer/base/packages.txt"'),
    Setting("configure", BOOTSTRAP, STRING, None,
            "shell script run inside the chroot (`VAULT_USER`, `VAULT_BUILD_PUBKEY` set)",
            required=True, check=NON_EMPTY, path=INPUT, example='configure = "packer/base/configure.sh"'),
    Setting("disk_size", BOOTSTRAP, STRING, "3G", "ext4 file system size", check=SIZE),
    Setting("output", BOOTSTRAP, STRING, None, "the image; the first Packer stage names it as `iso_url`",
            required=True, check=NON_EMPTY, path=OUTPUT, example='output = "build/stages/base/base.qcow2"'),
    Setting("kernel", BOOTSTRAP, STRING, None, "the kernel copied out of the root file system",
            default_doc="`vmlinuz` beside `output`", check=NON_EMPTY, path=OUTPUT,
            example='kernel = "build/stages/base/vmlinuz"'),
    Setting("initrd", BOOTSTRAP, STRING, None, "the initrd copied out of the root file system",
            default_doc="`initrd.img` beside `output`", check=NON_EMPTY, path=OUTPUT,
            example='initrd = "build/stages/base/initrd.img"'),
    Setting("mirror", BOOTSTRAP, STRING, None, "Debian mirror URL", default_doc="mmdebstrap's default",
            check=NON_EMPTY, example='mirror = "http://HOST/debian"'),

    Setting("stall_timeout", STAGE, SECONDS, None,
            "overrides the top-level `stall_timeout` for this stage", default_doc="the top-level value",
            check=at_least(0), hint="use 0 (automatic) or a number of seconds", example="stall_timeout = 600"),
    Setting("memory", STAGE, INTEGER, None, "overrides the top-level `memory` for this stage's VM",
            default_doc="the top-level value", check=at_least(128), example="memory = 4096"),
    Setting("cpus", STAGE, INTEGER, None, "overrides the top-level `cpus` for this stage's VM",
            default_doc="the top-level value", check=at_least(1), example="cpus = 2"),

    Setting("variables", VARIANT, FREE, None,
            "Packer variable values of this variant, over the profile's `[variables]`"),
    Setting("var_files", VARIANT, STRINGS, (),
            "`*.pkrvars.hcl` of this variant, passed after the profile's `var_files`",
            check=NON_EMPTY, path=INPUT, example='var_files = ["packer/variants/demo.pkrvars.hcl"]'),
)

# The keys each table may hold.
SCOPE_KEYS: dict[str, dict[str, Setting]] = {
    scope: {s.name: s for s in SETTINGS if s.scope == scope} for scope in dict.fromkeys(s.scope for s in SETTINGS)
}
# Plain and named sub-tables: their name -> the scope of their keys.
SUBTABLES = {s.name: s.table for s in SETTINGS if s.table and s.scope == PROJECT}

# Where each scope is written, for errors and the docs.
PLACES = {
    FILE: "at the top level of vault.toml (not in a profile)",
    PROJECT: "at the top level or in [profiles.<name>]",
    FINAL: "in [final]",
    VERIFY: "in [verify]",
    BOOTSTRAP: "in [bootstrap.<stage>]",
    STAGE: "in [stages.<stage>]",
    VARIANT: "in [variants.<variant>]",
}

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def lookup(scope: str, name: str) -> Setting:
    """The table's entry for ``name`` in ``scope`` (KeyError if none)."""
    return SCOPE_KEYS[scope][name]


def toml_text(value: Any, limit: int = 200) -> str:
    """A value as TOML would spell it, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- docs/configuration.md -------------------------------------------------------------------------------------

DOCS_HEADER = """\
# Configuration: vault.toml

<!-- Generated from the table of settings in vaultdoit/settings.py: edit the help
     texts there, then run `python -m vaultdoit.settings --markdown > docs/configuration.md`. -->

`vault.toml` at the project root is optional. Without it the project is one
pipeline: templates in `packer/`, `ansible/ansible.cfg` if present, image
name = the folder's name. Every key below is optional unless marked required;
paths are relative to the project folder.

Every value is checked when the project loads, before any task runs: an
unknown key (with a did-you-mean), a value of the wrong type or out of range,
a file that must exist and does not, a path that would be written outside the
project. Each is one line naming the file, the line, the problem and the fix,
and `doit` or `vaultdoit` exits with 2:

```
vault.toml:12: unknown setting "comprssion" in [final] (fix: did you mean "compression"?)
```
"""

SECTIONS = {
    PROJECT: """\
## Top level

These apply to every profile. A `[profiles.<name>]` table holds the same keys
and overrides the top level key by key, inside `[final]`, `[verify]`,
`[variables]`, `[bootstrap.<stage>]` and `[stages.<stage>]` too (a list
replaces a list; it is not appended to).""",
    FINAL: """\
## `[final]`

How the final image is flattened and compressed (`final_image`). Changing
these re-runs only `final_image`.""",
    VERIFY: """\
## `[verify]`

The boot test of the final image (`verify`): the image boots on a throwaway
snapshot, the test logs in over SSH and checks `systemctl is-system-running`,
the units and the commands.""",
    BOOTSTRAP: """\
## `[bootstrap.<stage>]`

A stage built without Packer (usually written `[profiles.<name>.bootstrap.<stage>]`).""",
    STAGE: """\
## `[stages.<stage>]`

Settings of one stage, overriding the top level for it. Stage names are known
only once the templates are read, so a `[stages.<stage>]` table that names no
stage is refused when the stages are planned (with a did-you-mean), not when
vault.toml is read.

`memory` and `cpus` size the stage's build VM. They reach Packer as the
variables the template writes in the source's `memory` and `cpus` (`memory =
var.vm_memory` sets `vm_memory`), else as variables named `memory` and `cpus`
where the template declares them; a template that declares neither keeps its
own values. They are never part of a stage's key: changing them rebuilds
nothing. Without a value they come from the host, leaving it usable (the
seed's OPT-7): a quarter of its memory (at least 1024 MiB, at most 4096) and
half its cores (at least 1). However many builds doit runs at once (`-n`),
the build VMs running side by side together stay within the host's cores and
its memory less a quarter (at least 2 GiB) kept free; a build that would not
fit waits, with one line saying so (see [Parallel builds](#parallel-builds)).""",
    VARIANT: """\
## `[variants.<variant>]`

Variants of the profile's image (usually written
`[profiles.<name>.variants.<variant>]`), each a set of Packer variable values.
Every variant is planned with its values; a stage whose resolved settings
(where it writes left aside), inputs and parent are the same for every
variant is one task, `stage:<name>`, built once and shared; a stage that
differs is one task per variant, `stage:<name>:<variant>`, and each variant is
an image (`final_image:<variant>`, `verify:<variant>`). `variant` (above)
picks the ones plain `doit` builds. A variant name is a plain name (letters,
digits, `.`, `_` and `-`) other than `all`.

A stage that differs between variants needs a folder of its own per variant:
vaultdoit sets the template's variable `variant` (when it declares one) to the
variant's name, so write e.g. `output_directory = "${var.build_dir}/${var.variant}/final"`.
Two variants whose images would differ but land in the same folder are an
error when the project loads.

Variable values, lowest priority first: the template's `default`,
`*.auto.pkrvars.hcl` of the template folder, `[variables]`, `variant` (the
variant's name), the variant's `variables`, `var_files` (the profile's, then
the variant's), `PKR_VAR_<name>`, the command line.""",
}

DOCS_FOOTER = f"""\
## `[variables]`

Free-form: each key is a Packer variable (letters, digits, `_` and `-`), each
value a string, number, boolean, list or table, passed as `-var name=value`
(lists and tables as JSON). A string given to a list or map variable is read
as HCL text, as `packer build -var` does.

## Parallel builds

`doit -n N final_image` (doit runs tasks in threads) builds independent
stages and variants at once, and nothing two builds use at the same time is
shared:

- each stage instance writes its own output folder (refused at load
  otherwise), its own log (`build/logs/<profile>/[<variant>/]stage-<name>.log`),
  var file, merged `ansible.cfg`, fact cache (`cache/facts/<stage>[-<variant>]`)
  and temporary folder (`TMPDIR` and Ansible's local temp, one per build);
- vaultdoit sets the template's `log_dir` and `report_dir` variables, where it
  declares them, to the build's own folders: `build/logs/<profile>/` and
  `build/<profile>/reports/` for a shared stage, a `<variant>/` folder below
  each for a variant's own (serial consoles and fetched package lists never
  meet); those folders are placeholders in stage keys, so they decide nothing;
- each running VM holds a slot of the guard and gets its own window of ports
  through the template's `host_port_min`/`_max` (or the older `ssh_host_port_min`/`_max`)
  and `http_port_min`/`_max` variables where it declares them (slot N:
  SSH 2222+100N.., HTTP 8000+100N.., each window 100 ports wide); the VNC
  port stays Packer's pick in 5900-6000 (Packer 1.6 gives QEMU a wrong VNC
  display for any `vnc_port_min` but 5900). A template that declares none of them gets Packer's random
  pick in its default ranges, which two builds starting in the same second may
  race for (one then fails to start its VM; run it again or declare the
  variables). QMP sockets live in the output folder; the boot test's ports come
  from the kernel (port 0) and its QMP socket from a private temporary folder;
- the qemu-img wrapper for Packer 1.6 is written once per content into a folder
  named by its digest, under a temporary name renamed into place.

The guard: the build VMs running at once (stages, boot tests and `dev:`
runs) together use at most the host's cores and its memory less a quarter
(at least 2 GiB) kept free; a build that would not fit waits and says so:

```
vaultdoit: stage:final:production waits for room: its VM needs 2 CPUs, 1024 MiB; running stage:final:demo use 2 of 2 CPUs and 1024 of 18432 MiB
```

A stage's record beside its image (and the manifest) keeps `waited_seconds`.

## Paths

Files vaultdoit only reads (`packer_dir`, `var_files`, `ansible_cfg`,
`requirements`, `bootstrap.<stage>.packages` and `configure`, `verify.key`)
may live anywhere and must exist.

Everything vaultdoit creates, moves or deletes stays inside the project
folder, or inside a folder listed in `allowed_paths` or in the environment
variable `{ALLOWED_PATHS_ENV}` (absolute paths separated by `:`), after
resolving symlinks: a symlink that leads out of the project counts as
outside. That covers `build_key`, `access_key`, `bootstrap.<stage>.output`,
`kernel` and `initrd`, the final image (`image_name` is a file name: the image
always goes to `build/final/`), and the `build/` and `cache/` folders
themselves (to keep them on another disk, symlink them and list the target in
`allowed_paths`). A path outside is refused when the project loads:

```
vault.toml:9: build_key = "../../id_ed25519" is outside the project (fix: {CONFINE_HINT})
```

The `keys` task makes a key's folder private (mode 700), so a key may not sit
directly in the project folder or in an allowed folder, and it never replaces
an existing file that has no `.pub` beside it.

## Remote cache

With `remote_cache = "<registry>/<repository>"` (or `{REMOTE_CACHE_ENV}`,
which overrides the file; `{REMOTE_CACHE_ENV}=off` turns it off on one
machine), every stage task first looks its stage up in that OCI registry
repository (Harbor, GHCR, ECR, GitLab's registry, `distribution`): a hit is
pulled instead of built, a miss is built and then pushed. Stages are found by
key (see `vaultdoit explain stage:<name>`) and, for a stage on a parent, by
the exact parent image they were built on. Pulled data is checked against its
digests before it is used; a registry that cannot be reached or fails is one
warning line and the stages are built here, never a failed build.

- Credentials come from the usual places, never from the project: `docker
  login` / `oras login` (`~/.docker/config.json` or `$DOCKER_CONFIG`, with
  their credential helpers), podman/skopeo's `$REGISTRY_AUTH_FILE`, or
  `VAULTDOIT_REGISTRY_USER` and `VAULTDOIT_REGISTRY_PASSWORD`.
- A registry on `localhost` or a loopback address is spoken to over plain
  HTTP (as docker does); every other one over HTTPS.
- Pushing: `remote_push = false` in the file (e.g. a committed project that
  only CI pushes from), `{REMOTE_PUSH_ENV}=0` or `=1` per machine, or
  `doit final_image remote_push=0` for one run (command line over
  environment over file).
- `vaultdoit cache push [STAGE...]` and `vaultdoit cache pull [STAGE...]` do
  it by hand; a pulled stage counts as up to date for doit.

## Shared keys

The stages log in with the build key and the base stage authorizes its
public half, so the base's key holds it; the final stage installs the access
key. Keys made on each machine by the `keys` task therefore give every
machine its own keys, and no stage is ever shared. A team that shares stages
(a remote cache, or CI caches through `vaultdoit cache export`/`import`)
distributes one key pair like any CI secret and names the private key files
in `{BUILD_KEY_ENV}` and `{ACCESS_KEY_ENV}` (absolute paths): the `keys`
task copies them to `build_key` and `access_key` (the public half from
`<file>.pub`, else from `ssh-keygen -y`) instead of making new ones.
"""


def _type_doc(s: Setting) -> str:
    if s.kind.shape != "value":
        return "table"
    if s.path:
        noun = {INPUT: "file", INPUT_DIR: "folder", OUTPUT: "path (written)", FOLDER: "folder"}[s.path]
        return f"list of {noun}s" if s.kind is STRINGS else noun
    doc = s.kind.doc
    extra = s.check.doc if s.check and s.check.doc is not None else s.check.must if s.check else ""
    return f"{doc}: {extra}" if extra else doc


def _key_doc(s: Setting) -> str:
    if s.kind.shape == "value":
        return f"`{s.name}`"
    label = {"profiles": "name", "bootstrap": "stage", "stages": "stage", "variants": "variant"}.get(s.name)
    return f"`[{s.name}.<{label}>]`" if label else f"`[{s.name}]`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """docs/configuration.md, from the table of settings."""
    parts = [DOCS_HEADER]
    for scope, intro in SECTIONS.items():
        rows = [s for s in SETTINGS if s.scope == scope or (scope == PROJECT and s.scope == FILE)]
        lines = [intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| {_key_doc(s)} | {_cell(_type_doc(s))} | {_cell(s.shown_default)} | {_cell(s.help)} |"
                  for s in rows]
        parts.append("\n".join(lines) + "\n")
    parts.append(DOCS_FOOTER)
    return "\n".join(parts)


def main(argv: Sequence[str]) -> int:
    """``python -m vaultdoit.settings --markdown``: print docs/configuration.md."""
    if list(argv) != ["--markdown"]:
        print("usage: python -m vaultdoit.settings --markdown > docs/configuration.md", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
