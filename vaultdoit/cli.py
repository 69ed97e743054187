"""The vaultdoit command line: what doit lacks (explain, status, report, graph, run, ssh, doctor, scan, ...).

Errors become exit codes in vaultdoit.exits, the one place that maps them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vaultdoit import __version__
from vaultdoit.errors import VaultError
from vaultdoit.exits import EXIT_FAILED, EXIT_USER, EXIT_WOULD_RUN, exit_on_error

if TYPE_CHECKING:
    from vaultdoit.project import Project

DODO = '''"""doit entry point: `doit list`, `doit final_image`, `doit verify`."""

from vaultdoit.dodo import setup

globals().update(setup(__file__))
'''


def _root(path: str | None) -> Path:
    from vaultdoit.config_file import find_root

    return find_root(Path(path) if path else Path.cwd())


@click.group()
@click.version_option(__version__, prog_name="vaultdoit")
@click.option("--debug", is_flag=True, help="Show tracebacks and every command run.")
@click.option("-C", "--directory", default=None, help="Project folder (default: search upwards from here).")
@click.option("--profile", default=None, help="Pipeline profile from vault.toml (default: its `profile`).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="A Packer variable for this command, as `doit ... var.NAME=VALUE` gives a build; repeatable.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, directory: str | None, profile: str | None,
        variables: tuple[str, ...]) -> None:
    """Incremental, cached VM golden-image builds on top of doit.

    Build with `doit final_image`; list tasks with `doit list`.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")
    ctx.obj = {"debug": debug, "directory": directory, "profile": profile, "variables": variables}


def _vars(obj: dict[str, object]) -> tuple[tuple[str, str], ...]:
    from vaultdoit import runvars

    return runvars.parse(obj["variables"])  # type: ignore[arg-type]


@cli.command()
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def explain(obj: dict[str, object], task: str, as_json: bool) -> None:
    """Say why TASK would run (which inputs or settings changed), or that it is up to date.

    Also `doit explain TASK`, which takes doit's options (--db-file, --backend).
    """
    from vaultdoit import explain as explain_mod

    with exit_on_error(bool(obj["debug"])):
        item = explain_mod.explain(_root(obj["directory"]), task, obj["profile"], _vars(obj))  # type: ignore[arg-type]
        click.echo(explain_mod.to_json([item]) if as_json else explain_mod.render_explanation(item))


@cli.command()
@click.argument("tasks", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing: the exit code says whether anything would run.")
@click.pass_obj
def status(obj: dict[str, object], tasks: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """One line per task (or TASKS and what they need): up to date, or will run and why.

    Exit code 0 when nothing would run, 1 when something would: CI can gate on it.
    Also `doit status`, which takes doit's options (--db-file, --backend).
    """
    from vaultdoit import explain as explain_mod

    with exit_on_error(bool(obj["debug"])):
        items = explain_mod.explain_all(_root(obj["directory"]), obj["profile"], _vars(obj),  # type: ignore[arg-type]
                                        names=list(tasks) or None)
        if as_json:
            click.echo(explain_mod.to_json(items))
        elif not quiet:
            click.echo(explain_mod.render_status(items))
    if any(item.will_run for item in items):
        sys.exit(EXIT_WOULD_RUN)


@cli.group()
def cache() -> None:
    """Inspect and manage the caches: downloads (cache/), archives of the build, the remote stage cache."""


def _project(obj: dict[str, object]) -> Project:
    from vaultdoit.plan import load_project

    return load_project(_root(obj["directory"]), obj["profile"], _vars(obj))  # type: ignore[arg-type]


@cache.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def cache_status(obj: dict[str, object], as_json: bool) -> None:
    """Each cache: where it is, its size and entries; the APT proxy's traffic per stage."""
    import json as json_mod

    from vaultdoit import cache_report

    with exit_on_error(bool(obj["debug"])):
        report = cache_report.collect(_project(obj))
        click.echo(json_mod.dumps(report, indent=2, sort_keys=True) if as_json else cache_report.render(report))


@cache.command("verify")
@click.pass_obj
def cache_verify(obj: dict[str, object]) -> None:
    """Re-hash every file of the ISO store and the wheelhouse against what was verified."""
    from vaultdoit import cache_report

    with exit_on_error(bool(obj["debug"])):
        results = cache_report.verify(_project(obj))
        for path, problem in results:
            click.echo(f"{'ok  ' if problem is None else 'FAIL'}  {path}" + (f": {problem}" if problem else ""))
        bad = sum(problem is not None for _, problem in results)
        click.echo(f"{len(results)} files checked, {bad} failed")
        if bad:
            sys.exit(EXIT_FAILED)


@cache.command("stop")
@click.pass_obj
def cache_stop(obj: dict[str, object]) -> None:
    """Stop the build's apt-cacher-ng (it keeps running between builds to stay warm)."""
    from vaultdoit import apt_proxy

    with exit_on_error(bool(obj["debug"])):
        cfg = _project(obj).config
        proxy = apt_proxy.AptProxy(cfg.cache_dir / "apt", cfg.apt_proxy_port)
        click.echo("stopped apt-cacher-ng" if apt_proxy.stop(proxy) else "apt-cacher-ng was not running")


@contextlib.contextmanager
def _locked(obj: dict[str, object], command: str) -> Iterator[Project]:
    """The project, with its build lock held: no build changes the stages while they move."""
    from vaultdoit import lock

    project = _project(obj)
    with lock.held(project.config.root, f"vaultdoit cache {command}"):
        yield project


@cache.command("export")
@click.argument("file")
@click.option("--with-keys", is_flag=True, help="Also the SSH keys (private ones included): only for private stores.")
@click.pass_obj
def cache_export(obj: dict[str, object], file: str, with_keys: bool) -> None:
    """Write the built stages, the final image and the build state to FILE (a tar; `-`: stdout)."""
    from vaultdoit import archive

    with exit_on_error(bool(obj["debug"])), _locked(obj, "export") as project:
        contents = archive.export(project, file, with_keys=with_keys)
        stages = ", ".join(contents.stages) or "none"
        click.echo(f"exported stages: {stages}; {len(contents.files)} other files"
                   f"{' and the dependency records' if contents.database else ''} to {file}", err=file == "-")


@cache.command("import")
@click.argument("file")
@click.option("--with-keys", is_flag=True, help="Also take the SSH keys from the archive (replacing this project's).")
@click.pass_obj
def cache_import(obj: dict[str, object], file: str, with_keys: bool) -> None:
    """Read FILE (written by `cache export`; `-`: stdin) into this project, then say what is up to date."""
    from vaultdoit import archive

    with exit_on_error(bool(obj["debug"])), _locked(obj, "import") as project:
        result = archive.import_(project, file, with_keys=with_keys)
        for line in result.refused:
            click.echo(line)
        click.echo(f"imported stages: {', '.join(result.stages) or 'none'}; {result.files} other files")
        for name, reason in result.tasks:
            click.echo(f"{name}: {'up to date' if reason is None else 'will run: ' + reason}")


@cache.command("push")
@click.argument("stages", nargs=-1)
@click.pass_obj
def cache_push(obj: dict[str, object], stages: tuple[str, ...]) -> None:
    """Push STAGES (default: every stage) to the remote cache, if built for today's inputs."""
    from vaultdoit import remote

    with exit_on_error(bool(obj["debug"])), _locked(obj, "push") as project:
        for line in remote.push_stages(project, stages):
            click.echo(line)


@cache.command("pull")
@click.argument("stages", nargs=-1)
@click.pass_obj
def cache_pull(obj: dict[str, object], stages: tuple[str, ...]) -> None:
    """Pull STAGES (default: every stage) and their parents from the remote cache where this
    project's are not built for today's inputs; doit then counts them as up to date."""
    from vaultdoit import remote

    with exit_on_error(bool(obj["debug"])), _locked(obj, "pull") as project:
        for line in remote.pull_stages(project, stages):
            click.echo(line)


@cli.command()
@click.pass_obj
def repair(obj: dict[str, object]) -> None:
    """Rebuild doit's dependency database from the records beside the stage images.

    Use it when the database is damaged or lost: a task whose outputs were built
    from exactly today's inputs stays up to date; the others run on the next build.
    No image is deleted.
    """
    from vaultdoit import state

    with exit_on_error(bool(obj["debug"])):
        results = state.repair(_project(obj))
        for name, reason in results:
            click.echo(f"{name}: {'up to date' if reason is None else 'will run: ' + reason}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def doctor(obj: dict[str, object], as_json: bool) -> None:
    """Check this host: tools, accelerator, disk space, write permissions, the APT proxy's port.

    Exits 1 when a build cannot work here.
    """
    from vaultdoit import doctor as doctor_mod
    from vaultdoit.errors import ConfigError

    with exit_on_error(bool(obj["debug"])):
        try:
            root: Path | None = _root(obj["directory"])  # type: ignore[arg-type]
        except ConfigError:
            root = None  # the host checks still run
        checks = doctor_mod.run(doctor_mod.context(root, obj["profile"]))  # type: ignore[arg-type]
        click.echo(doctor_mod.to_json(checks) if as_json else doctor_mod.render(checks))
    if doctor_mod.failed(checks):
        sys.exit(EXIT_FAILED)


# --- the build report and the stage graph (vaultdoit/report.py, vaultdoit/graph.py) ---------------


@cli.command()
@click.option("--open", "open_it", is_flag=True, help="Open it in the desktop's browser (xdg-open).")
@click.option("--junit", is_flag=True, help="Print the path of the run's JUnit file of tasks instead.")
@click.pass_obj
def report(obj: dict[str, object], open_it: bool, junit: bool) -> None:
    """Print the path of the last run's HTML report (every `doit` run that ran a task writes one)."""
    from vaultdoit import proc, runs
    from vaultdoit.tasks.common import reports

    with exit_on_error(bool(obj["debug"])):
        folder = reports(_project(obj))
        path = runs.latest(folder)
        if path is None:
            raise VaultError("no build report yet", file=runs.folder(folder),
                             hint="run `doit` (a run in which a task runs writes one)")
        if junit:
            path = path.with_name(f"{runs.LATEST}.junit.xml")
        click.echo(str(path))
        if open_it:
            proc.run(["xdg-open", str(path)])


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["all", "svg", "dot", "mermaid"]), default="all",
              show_default=True, help="What to write.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for all formats, the file for one, or - for standard output "
                   "(default: the build's report folder).")
@click.pass_obj
def graph(obj: dict[str, object], fmt: str, output: Path | None) -> None:
    """Write the stage graph as SVG (a picture), Graphviz DOT and Mermaid."""
    from vaultdoit import graph as graph_mod
    from vaultdoit.files import write_atomic
    from vaultdoit.tasks import gen_all
    from vaultdoit.tasks.common import reports

    with exit_on_error(bool(obj["debug"])):
        project = _project(obj)
        tasks = list(gen_all(project))
        root = project.config.root
        details = {}
        for task in tasks:
            image = task.get("meta", {}).get("vaultdoit", {}).get("image")
            if image and (root / image).is_file():
                details[task["basename"]] = f"{(root / image).stat().st_size / 2**20:.1f} MiB"
            elif image:
                details[task["basename"]] = "not built"
        g = graph_mod.from_tasks([(t["basename"], t.get("meta", {}).get("vaultdoit", {})) for t in tasks],
                                 details=details)
        texts = {"svg": graph_mod.svg(g, f"stage graph of {project.config.image_name}"), "dot": graph_mod.dot(g),
                 "mermaid": graph_mod.mermaid(g)}
        suffix = {"svg": ".svg", "dot": ".dot", "mermaid": ".mmd"}
        if str(output) == "-":
            if fmt == "all":
                raise VaultError("-o - prints one format", hint="add --format svg, dot or mermaid")
            click.echo(texts[fmt], nl=False)
            return
        chosen = list(texts) if fmt == "all" else [fmt]
        if output is not None and fmt != "all":
            paths = {fmt: output}
        else:
            folder = output or reports(project)
            paths = {name: folder / f"graph{suffix[name]}" for name in chosen}
        for name, path in paths.items():
            write_atomic(path, texts[name])
            click.echo(str(path))


# --- get into an image (vaultdoit/session.py) ----------------------------------------------------


@cli.command("run")
@click.argument("target", required=False)
@click.option("--memory", type=int, default=2048, show_default=True, help="MiB of memory.")
@click.option("--cpus", type=int, default=2, show_default=True, help="Virtual CPUs.")
@click.pass_obj
def run_image(obj: dict[str, object], target: str | None, memory: int, cpus: int) -> None:
    """Boot an image on a throwaway snapshot, its console here and SSH on 127.0.0.1.

    TARGET: `final` (the final image, the default), `stage:NAME` (a stage's image),
    `failed:NAME` (the disk a failed build kept, see keep_failed) or a .qcow2 file.
    Log in from another terminal with `vaultdoit ssh`. Nothing is written to the image.
    """
    from vaultdoit import session

    with exit_on_error(bool(obj["debug"])):
        project = _project(obj)
        code = session.run(project, session.resolve(project, target), memory=memory, cpus=cpus,
                           say=lambda line: click.echo(line, err=True))
    sys.exit(code)


class _RemoteCommand(click.Command):
    """Everything after ``--`` is the command to run in the guest, options and all."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["remote"] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


@cli.command("ssh", cls=_RemoteCommand)
@click.argument("target", required=False)
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for a guest that is still booting.")
@click.pass_context
def ssh_image(ctx: click.Context, target: str | None, timeout: float) -> None:
    """Open a shell in the VM `vaultdoit run` started, or run a command and exit with its code.

    \b
    vaultdoit ssh                            a shell in the only running VM
    vaultdoit ssh stage:drivers              a shell in that one
    vaultdoit ssh -- systemctl --failed      run a command (everything after --)
    """
    from vaultdoit import session

    obj = ctx.obj
    with exit_on_error(bool(obj["debug"])):
        project = _project(obj)
        running = session.find(project, target)
        code = session.ssh(running, list(ctx.meta.get("remote", [])), timeout=timeout,
                           say=lambda line: click.echo(line, err=True))
    sys.exit(code)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing dodo.py.")
def init(directory: Path, force: bool) -> None:
    """Write the two-line dodo.py that makes DIRECTORY a vaultdoit project."""
    with exit_on_error():
        directory.mkdir(parents=True, exist_ok=True)
        dodo = directory / "dodo.py"
        if dodo.exists() and not force:
            raise VaultError("dodo.py already exists", file=dodo, hint="pass --force to overwrite it")
        dodo.write_text(DODO)
        if not (directory / "packer").is_dir():
            click.echo(f"wrote {dodo}; now put your *.pkr.hcl templates in {directory / 'packer'}/")
        else:
            click.echo(f"wrote {dodo}; try `doit list`")


# --- vaultdoit scan: the offline leak scan of an image (vaultdoit/scan.py) ---------------------


@cli.command("scan")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--build-key", "build_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Public key the build logged in with (besides the project's); repeatable.")
@click.option("--access-key", "access_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Public key the image may authorize (besides the project's); repeatable.")
@click.option("--proxy", "proxies", multiple=True, metavar="HOST:PORT",
              help="Address of a proxy the build used (besides the project's APT proxy); repeatable.")
@click.option("--no-project", is_flag=True, help="Ignore the project's keys and proxy: generic checks only.")
@click.option("--tmpdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the image is unpacked while it is read (default: $TMPDIR); needs twice its used size.")
@click.pass_obj
def scan_image(obj: dict[str, object], image: Path, build_keys: tuple[Path, ...], access_keys: tuple[Path, ...],
               proxies: tuple[str, ...], no_project: bool, tmpdir: Path | None) -> None:
    """Read IMAGE offline (never booted) and fail on anything of the build in it.

    One line per finding (path in the image: what), then a summary. Exit 1 on
    findings, 2 when a volume cannot be read (LVM, an unknown file system).
    """
    from vaultdoit import config_file, leaks, scan
    from vaultdoit.errors import ConfigError

    with exit_on_error(bool(obj["debug"])):
        secrets, notes = leaks.Secrets(), list[str]()
        if not no_project:
            try:
                cfg = config_file.load(_root(obj["directory"]), obj["profile"])  # type: ignore[arg-type]
                secrets, notes = leaks.project_secrets(cfg)
            except ConfigError:
                if obj["directory"] or obj["profile"]:
                    raise
                notes.append("no project here: generic checks only (or give --build-key, --access-key, --proxy)")
        secrets = secrets.plus(build=[leaks.read_public_key(p) for p in build_keys],
                               access=[leaks.read_public_key(p) for p in access_keys], proxies=proxies)
        report = scan.scan(image, secrets, tmpdir=tmpdir)
        for line in notes + report.notes:
            click.echo(f"note: {line}", err=True)
        for finding in report.findings:
            click.echo(str(finding))
        for line in report.unreadable:
            click.echo(f"vaultdoit: error: {line}", err=True)
        click.echo(report.summary())
    if report.unreadable:
        sys.exit(EXIT_USER)
    if report.findings:
        sys.exit(EXIT_FAILED)


# --- vaultdoit verify-signature: the signed checksum file and SBOM of an image (vaultdoit/signing.py) ---


@cli.command("verify-signature")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--allowed-signers", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="OpenSSH allowed-signers file of the keys you trust (default: the project's signing key).")
@click.pass_obj
def verify_signature(obj: dict[str, object], image: Path, allowed_signers: Path | None) -> None:
    """Check IMAGE's signed checksum file and SBOM, then IMAGE (and the kernel and initrd beside
    it) against the checksums and the SBOM against IMAGE.

    What `ssh-keygen -Y verify` and `sha256sum -c` check, in one command. Exit 1
    when anything does not hold, with one line naming the file.
    """
    from vaultdoit import config_file, signing
    from vaultdoit.errors import ConfigError

    with exit_on_error(bool(obj["debug"])):
        if allowed_signers is not None:
            click.echo(signing.verify(image, allowed_signers).line(image))
            return
        try:
            key = config_file.load(_root(obj["directory"]), obj["profile"]).signing_key  # type: ignore[arg-type]
        except ConfigError:
            key = None
        if key is None:
            raise ConfigError("no key to check the signature against", file=image,
                              hint="pass --allowed-signers FILE (the publisher's key), or run it in the project "
                                   "that has signing_key set")
        with signing.trusting(key) as trusted:
            click.echo(signing.verify(image, trusted).line(image))


def main() -> None:
    """Console entry point."""
    cli(prog_name="vaultdoit")
