"""Pure planning: project files -> the ordered stage chain with parents and inputs.

No programs run here and nothing is written; the result is plain data the
task builders turn into doit tasks.
"""

from __future__ import annotations

import os
import re
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaultdoit import config_file
from vaultdoit import keys, owned, proc, runvars, variants
from vaultdoit.config import CONFIG_FILE, ProjectConfig, VariantConfig
from vaultdoit.bootstrap import read_packages
from vaultdoit.errors import ConfigError, GraphError
from vaultdoit.inputs import Collector, extra_var_files
from vaultdoit.iso_store import check_spec, file_name
from vaultdoit.project import Project, pubkey, wheel_manifest
from vaultdoit.model import (GUEST_HOST, MISSING_YET, AptRoute, PackerConfig, PackerSource, Provisioner,
                             Stage, Unknown)

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

# Source attributes that change how the build VM runs, not what ends up in the
# image: they stay out of the cache key so tuning them rebuilds nothing.
RUNTIME_ATTRS = frozenset({
    "accelerator", "memory", "cpus", "cores", "sockets", "threads", "headless",
    "vnc_bind_address", "vnc_port_min", "vnc_port_max", "vnc_use_password",
    "ssh_timeout", "ssh_wait_timeout", "ssh_handshake_attempts", "ssh_host_port_min",
    "ssh_host_port_max", "ssh_private_key_file", "ssh_port", "ssh_pty", "boot_wait",
    "shutdown_timeout", "http_port_min", "http_port_max", "http_bind_address",
    "host_port_min", "host_port_max", "skip_nat_mapping", "display", "qmp_enable", "qmp_socket",
})


def _local_path(root: Path, url: str) -> Path | None:
    """The file an ``iso_url`` names, or None for a remote URL."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif URL.match(url):
        return None
    path = Path(url)
    return path if path.is_absolute() else root / path


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path))


def _bootstrap_stages(cfg: ProjectConfig) -> list[Stage]:
    stages = []
    for b in cfg.bootstraps:
        for needed in (b.packages, b.configure):
            if not needed.is_file():
                raise ConfigError(f"bootstrap.{b.name}: {needed.relative_to(cfg.root)} does not exist",
                                  file=cfg.root / CONFIG_FILE, hint="create it or fix the path")
        settings = {
            "tool": b.tool, "suite": b.suite, "packages": list(read_packages(b.packages)),
            "disk_size": b.disk_size, "mirror": b.mirror, "user": cfg.build_user,
        }
        stages.append(Stage(
            name=b.name, kind=b.tool, output=_norm(b.output), parent=None,
            inputs=tuple(sorted({b.packages, b.configure, pubkey(cfg.build_key)})),
            settings=settings, extra_outputs=(_norm(b.kernel), _norm(b.initrd)),
            doc=f"bootstrap the {b.name} image with {b.tool} ({b.suite})",
        ))
    return stages


def secrets(packer_cfg: PackerConfig) -> list[str]:
    """Values of the template's sensitive variables: never stored in clear anywhere."""
    values = [packer_cfg.variables.get(name) for name in packer_cfg.sensitive]
    return [v if isinstance(v, str) else keys.canonical(v) for v in values if v not in (None, "")]


def _image_settings(source: PackerSource, root: Path, hidden: list[str],
                    places: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resolved values that decide a Packer stage's image (its cache key).

    Paths inside the project are written relative to it and secrets as digests,
    so the key is the same wherever the project lives and reveals nothing; the
    build's log and report folders (``places``) are placeholders.
    """
    attrs = {k: v for k, v in sorted(source.attrs.items()) if k not in RUNTIME_ATTRS}
    provisioners = [
        {"type": p.type,
         "playbook_file": os.path.relpath(p.playbook_file, root) if p.playbook_file else None,
         "extra_arguments": list(p.extra_arguments),
         "settings": {k: v for k, v in sorted(p.settings.items()) if k not in ("playbook_file", "extra_arguments")}}
        for p in source.provisioners
    ]
    return keys.normalize({"source": attrs, "provisioners": provisioners}, root, hidden, places)


def _extra_vars(args: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` pairs of ``--extra-vars``/``-e`` arguments (the common string form)."""
    found: dict[str, str] = {}
    for arg in args:
        for word in arg.split():
            if "=" in word and not word.startswith("-"):
                key, _, value = word.partition("=")
                found[key] = value
    return found


def _argument_paths(args: tuple[str, ...], root: Path) -> list[Path]:
    """Absolute or project paths mentioned as ``key=value`` in provisioner arguments."""
    found = []
    for arg in args:
        for word in arg.split():
            value = word.split("=", 1)[1] if "=" in word else word
            if value.startswith("/") or value.startswith("./"):
                found.append(_norm(root / value))
    return found


def _output(cfg: ProjectConfig, source: PackerSource) -> Path:
    """The stage's image, after checking that its folder is one vaultdoit may replace."""
    folder = _norm(cfg.root / str(source.attrs["output_directory"]))
    owned.check_output_folder(folder, cfg, what="output_directory", file=source.where or source.file)
    return folder / str(source.attrs["vm_name"])


def _iso_input(cfg: ProjectConfig, source: PackerSource, out: Path, outputs: dict[Path, str],
               found: Collector, warnings: list[str]) -> tuple[str | None, tuple[str, str, Path] | None]:
    """Read ``iso_url``: (parent stage, ISO-store entry); a local image becomes an input."""
    root = cfg.root
    raw = source.attrs.get("iso_url")
    if raw is None and isinstance(source.attrs.get("iso_urls"), list) and source.attrs["iso_urls"]:
        raw = source.attrs["iso_urls"][0]  # Packer tries them in order; the first decides the key
    what = f'source "qemu" "{source.name}"'
    if isinstance(raw, Unknown) or raw is None or not str(raw).strip():
        raise GraphError(f"{what}: iso_url is {'empty' if raw is not None else 'not set'}",
                         file=source.where or source.file, hint="set iso_url to an image file or URL")
    iso_url = str(raw)
    checksum = source.attrs.get("iso_checksum", "none")
    problem = check_spec(str(checksum)) if not isinstance(checksum, Unknown) else None
    if problem:
        # Refused before anything is downloaded.
        raise GraphError(f"{what}: iso_checksum {checksum!r}: {problem}", file=source.where or source.file,
                         hint='write "sha256:<hex>", "file:<url of a SHA256SUMS list>" or "none"')
    iso = _local_path(root, iso_url)
    if iso is None or (iso_url.startswith("file://") and not _inside(_norm(iso), root)):
        # Remote (or outside the project): fetched into the ISO store by cache:iso-<file>.
        cached = cfg.cache_dir / "isos" / file_name(iso_url)
        found.found.files.add(cached)
        if "iso_url" not in source.attr_vars:
            warnings.append(f"{source.where or source.file}: {what}: iso_url is not a lone var.*, so Packer "
                            "downloads it itself; write iso_url = var.iso_url to use the ISO store")
        return None, (iso_url, str(source.attrs.get("iso_checksum", "none")), cached)
    iso = _norm(iso)
    if iso in outputs and outputs[iso] != source.name:
        return outputs[iso], None
    if iso == out:
        raise GraphError(f"{what}: iso_url is its own output", file=source.where or source.file,
                         hint="point iso_url at the parent stage's image")
    if _inside(iso, _norm(root / "build")):
        raise GraphError(f"{what}: iso_url {os.path.relpath(iso, root)} is not built by any stage",
                         file=source.where or source.file, hint="fix iso_url or add the stage that builds it")
    found.add(iso_url, "iso_url", source.where, folder_ok=False)
    return None, None


def _existing(root: Path, values: Any) -> list[Path]:
    """Resolved values of a setting that name existing files or folders (the rest the Collector
    reports: missing files fail the stage's build, unknown values widen with a warning)."""
    items = values if isinstance(values, list) else [values]
    found = [_norm(root / os.path.expanduser(str(v))) for v in items
             if isinstance(v, (str, Path)) and str(v) and not isinstance(v, Unknown)]
    return [p for p in found if p.exists()]


def _ansible_env(prov: Provisioner) -> Mapping[str, str]:
    """What Ansible sees: our environment under the provisioner's ``ansible_env_vars``.

    A view, not a copy: only the variables Ansible's settings look up are read
    (the plan cache records which ones, see plancache).
    """
    own: dict[str, str] = {}
    for item in prov.settings.get("ansible_env_vars") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            own[key] = value
    return ChainMap(own, os.environ)


def _provisioner_inputs(cfg: ProjectConfig, source: PackerSource, found: Collector,
                        warnings: list[str]) -> None:
    """Every provisioner's files: playbook closures, scripts, uploads, files handed to Ansible."""
    root = cfg.root
    wheel_dir = _norm(cfg.cache_dir / "wheels")
    generated = _generated(cfg)
    for index, prov in enumerate(source.provisioners):
        found.provisioner(prov, index)
        if prov.playbook_file is None:
            continue
        if not prov.playbook_file.is_file():
            found.add(str(prov.playbook_file), f"provisioner {index + 1} ({prov.type}) playbook_file", prov.where)
            continue
        settings = prov.settings
        inventories = _existing(root, settings.get("inventory_file")) + \
            _existing(root, settings.get("inventory_directory")) + _existing(root, _inventory_args(prov))
        galaxy = _existing(root, settings.get("galaxy_file"))
        from vaultdoit import playbook  # imports yaml: only when the plan is not cached

        closure = playbook.playbook_closure(
            prov.playbook_file, ansible_cfg=cfg.ansible_cfg,
            extra_vars=_extra_vars(prov.extra_arguments),
            roles_path=_existing(root, settings.get("roles_path")) + _existing(root, settings.get("role_paths")),
            inventories=[p for p in inventories if p.is_file() or p.is_dir()],
            extra_var_files=[p for p in _existing(root, extra_var_files(prov.extra_arguments)) if p.is_file()],
            galaxy_file=galaxy[0] if galaxy and galaxy[0].is_file() else None,
            env=_ansible_env(prov))
        found.found.files |= set(closure.files)
        warnings.extend(closure.warnings)
        for path in _argument_paths(prov.extra_arguments, root):
            if path == wheel_dir:
                found.found.files.add(wheel_manifest(cfg))
            elif path in generated or path.is_file():
                found.found.files.add(path)
    if cfg.ansible_cfg is not None and any(p.type in ("ansible", "ansible-local") for p in source.provisioners):
        found.found.files.add(cfg.ansible_cfg)


def _generated(cfg: ProjectConfig) -> frozenset[Path]:
    """Files the keys task makes: stages depend on them even before they exist."""
    return frozenset(_norm(p) for k in (cfg.build_key, cfg.access_key) for p in (k, pubkey(k)))


def _inventory_args(prov: Provisioner) -> list[str]:
    """``-i FILE`` / ``--inventory FILE`` in extra_arguments (a comma list is hosts, not a file)."""
    words = [w for arg in prov.extra_arguments for w in str(arg).split()]
    return [w for prev, w in zip(["", *words], words)
            if prev in ("-i", "--inventory", "--inventory-file") and "," not in w]


def _packer_stages(cfg: ProjectConfig, packer_cfg: PackerConfig, known_outputs: dict[Path, str],
                   extra_outputs: frozenset[Path], places: Mapping[str, str] | None = None,
                   ) -> tuple[list[Stage], list[str]]:
    root = cfg.root
    warnings: list[str] = []
    outputs = dict(known_outputs)
    for source in packer_cfg.sources:
        out = _output(cfg, source)
        if out in outputs:
            raise GraphError(f'stages "{outputs[out]}" and "{source.name}" both write {os.path.relpath(out, root)}',
                             file=source.where or source.file,
                             hint="give each stage its own output_directory/vm_name")
        outputs[out] = source.name
    hidden = secrets(packer_cfg)
    stages: list[Stage] = []
    for source in packer_cfg.sources:
        out = _output(cfg, source)
        # Templates count by their resolved meaning (the settings), not their bytes:
        # reformatting a file or editing another stage's block rebuilds nothing.
        found = Collector(root, f'stage "{source.name}"', generated=_generated(cfg))
        parent, store = _iso_input(cfg, source, out, outputs, found, warnings)
        found.source(source)
        found.qemuargs(source, extra_outputs)
        _provisioner_inputs(cfg, source, found, warnings)
        warnings.extend(found.found.warnings)
        warnings.extend(_unknown_warnings(source, found.found.warnings, _generated(cfg)))
        inputs = found.found.files - {out}
        stages.append(Stage(
            name=source.name, kind="packer", output=out, parent=parent,
            inputs=tuple(sorted(inputs)), settings=_image_settings(source, root, hidden, places),
            source=source, packer=packer_cfg, iso=store,
            root_image=store[2] if store and _backed(source) else None,
            problems=tuple(dict.fromkeys(found.found.problems)),
            doc=f"packer build {source.only} ({os.path.relpath(source.file, root)})",
        ))
    return stages, warnings


def _unknown_warnings(source: PackerSource, said: list[str], generated: frozenset[Path]) -> list[str]:
    """One line per setting that cannot be resolved before the build (not already said as a path,
    and not waiting for a file the build makes itself, such as its SSH keys)."""
    lines: list[str] = []

    def expected(value: Unknown) -> bool:
        return value.reason.endswith(MISSING_YET) and Path(value.reason[:-len(MISSING_YET)]) in generated

    def walk(value: Any, setting: str) -> None:
        if isinstance(value, Unknown):
            if not expected(value) and not any(line.startswith(f"{value.where}:") for line in said):
                lines.append(f"{value.where}: {setting} = {value.text} cannot be resolved before the build "
                             f"({value.reason}); the stage's key holds its text")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{setting}.{key}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, setting)

    for key, value in sorted(source.attrs.items()):
        walk(value, key)
    for index, prov in enumerate(source.provisioners):
        for key, value in sorted(prov.settings.items()):
            walk(value, f"provisioner {index + 1} ({prov.type}) {key}")
    return lines


def _backed(source: PackerSource) -> bool:
    """A disk-image source with use_backing_file: its overlay is backed by the file at iso_url."""
    return source.attrs.get("disk_image") is True and source.attrs.get("use_backing_file") is True


def _order(stages: list[Stage]) -> list[Stage]:
    """Parents before children; a cycle is an error."""
    by_id = {s.id: s for s in stages}
    ordered: list[Stage] = []
    state: dict[str, int] = {}

    def visit(stage: Stage, path: list[str]) -> None:
        if state.get(stage.id) == 2:
            return
        if state.get(stage.id) == 1:
            cycle = " -> ".join([*path[path.index(stage.id):], stage.id])
            raise GraphError(f"stage cycle: {cycle}", file=stage.source.file if stage.source else None,
                             hint="a stage's iso_url must not lead back to itself")
        state[stage.id] = 1
        if stage.parent:
            visit(by_id[stage.parent], [*path, stage.id])
        state[stage.id] = 2
        ordered.append(stage)

    for stage in stages:
        visit(stage, [])
    return ordered


def load_packer(cfg: ProjectConfig, variant: VariantConfig | None, overrides: Mapping[str, Any]) -> PackerConfig:
    """The template folder read with the values of ``variant`` (None: no variants); ``overrides``
    rank above everything (the run's ``var.NAME=value``, then the log and report folders of the
    build, see variants.locations)."""
    from vaultdoit import hcl  # imports python-hcl2: only when the plan is not cached

    defaults = dict(cfg.variables)
    var_files = cfg.var_files
    if variant is not None:
        defaults = {**defaults, variants.VARIANT_VAR: variant.name, **variant.variables}
        var_files = (*var_files, *variant.var_files)
    return hcl.load_packer_dir(cfg.packer_dir, cwd=cfg.root, var_files=var_files, defaults=defaults,
                               overrides=overrides)


def _load_packer(cfg: ProjectConfig, variant: VariantConfig | None, location: str | None,
                 run: runvars.RunVars) -> PackerConfig:
    """``load_packer`` with the run's variables and the log and report folders of a build for
    ``location`` (a variant's name, or None for a build shared by every variant)."""
    return load_packer(cfg, variant, {**dict(run), **variants.locations(cfg.paths, location)})


def load_project(root: Path, profile: str | None = None, variables: runvars.RunVars = ()) -> Project:
    """Read vault.toml, the templates and the playbooks under ``root`` into a Project.

    ``variables`` are per-run Packer variables (see runvars.py): as Packer's ``-var``, over all others.
    """
    cfg = config_file.load(root, profile)
    stages = _bootstrap_stages(cfg)
    known = {s.output: s.name for s in stages}
    extra_outputs = frozenset(p for s in stages for p in s.extra_outputs)
    paths = cfg.paths
    warnings: list[str] = []
    if not cfg.variants:
        packer_cfg = _load_packer(cfg, None, None, variables)
        packer_stages, warnings = _packer_stages(cfg, packer_cfg, known, extra_outputs, variants.places(paths, None))
        stages += packer_stages
    else:
        # Each variant with its own values (and its own log and report folders), then once more
        # with the shared folders: the stages every variant plans alike are taken from that one.
        passes: dict[str, list[Stage]] = {}
        for variant in cfg.variants:
            packer_variant = _load_packer(cfg, variant, variant.name, variables)
            found, said = _packer_stages(cfg, packer_variant, known, extra_outputs,
                                         variants.places(paths, variant.name))
            bootstrapped = {s.id for s in stages}
            passes[variant.name] = [s for s in _order(stages + found) if s.id not in bootstrapped]
            warnings += said
        packer_cfg = _load_packer(cfg, cfg.variants[0], None, variables)
        shared, _ = _packer_stages(cfg, packer_cfg, known, extra_outputs, variants.places(paths, None))
        merged, said = variants.combine([v.name for v in cfg.variants], passes, shared, root)
        stages += merged
        warnings += said
    runvars.check_declared(variables, packer_cfg.variables, cfg.packer_dir)
    if not stages:
        raise GraphError('no stages: no build block builds a source "qemu"', file=cfg.packer_dir,
                         hint="add a qemu source and a build block, or check packer_dir")
    outputs = {s.output: s.id for s in stages}
    owned.check_disjoint(outputs, root, keep=(cfg.state_dir, cfg.cache_dir, cfg.root / "build" / "keys"))
    ordered = _order(stages)
    config_file.check_stage_names(cfg, list(dict.fromkeys(s.name for s in ordered)))
    if cfg.top and not any(s.name == cfg.top for s in ordered):
        raise ConfigError(f"top = {cfg.top!r} is not a stage", file=root / CONFIG_FILE,
                          hint="name one of: " + ", ".join(dict.fromkeys(s.name for s in ordered)))
    return Project(config=cfg, packer=packer_cfg, stages=tuple(ordered), images=variants.images(ordered, cfg.top),
                   warnings=tuple(dict.fromkeys(warnings)), apt=_apt_route(cfg, packer_cfg),
                   variants=tuple(v.name for v in cfg.variants), run_vars=tuple(variables))


def _apt_route(cfg: ProjectConfig, packer_cfg: PackerConfig | None) -> AptRoute:
    """The APT proxy of the builds: the build's own apt-cacher-ng (``auto``, when installed and
    some stage can take a proxy), an external proxy URL, or none."""
    uses_apt = bool(cfg.bootstraps) or (packer_cfg is not None and "apt_proxy" in packer_cfg.variables)
    if not uses_apt or cfg.apt_proxy == "off":
        return AptRoute()
    if cfg.apt_proxy == "auto":
        if proc.which("apt-cacher-ng") is None:  # in /usr/sbin: not on every user's PATH
            return AptRoute()
        return AptRoute(host_url=f"http://127.0.0.1:{cfg.apt_proxy_port}",
                        guest_url=f"http://{GUEST_HOST}:{cfg.apt_proxy_port}",
                        managed_root=cfg.cache_dir / "apt", managed_port=cfg.apt_proxy_port)
    return AptRoute(host_url=cfg.apt_proxy, guest_url=cfg.apt_proxy)
