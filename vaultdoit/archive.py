"""Cache archives: a project's built stages and their state as one tar stream, and back.

``vaultdoit cache export FILE`` writes every built stage (image, other
outputs, build record), the final image with its manifest, the reports, the
boot test's report and doit's database into one tar (streamed: no file is
read whole, nothing is copied first). ``cache import FILE`` reads it back
into a project at any path: each file goes to a temporary name beside its
place, a stage's image is checked against the digest in its build record
while it is read, and only then is it renamed into place. Afterwards the
dependency records are brought up to date from the build records (the
``repair`` logic), so a CI cache restored from a tarball runs as a no-op.

The SSH keys stay out unless asked for (``--with-keys``): a CI cache is often
readable by more people than the keys should be. A team shares its keys as
secrets instead (VAULTDOIT_BUILD_KEY, VAULTDOIT_ACCESS_KEY).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vaultdoit import keys, owned, stage_files
from vaultdoit.errors import ConfigError
from vaultdoit.project import Project, pubkey

HEADER = "vaultdoit-archive.json"
FORMAT = 1
HEADER_LIMIT = 16 * 2**20


@dataclass
class Contents:
    """What an archive holds (its header), paths relative to the project."""

    profile: str | None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> key, image_sha256, files
    files: list[str] = field(default_factory=list)  # everything else
    database: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "profile": self.profile, "stages": self.stages, "files": self.files,
                           "database": self.database}, indent=1, sort_keys=True).encode()


def _final_files(project: Project) -> list[Path]:
    """Every final image with its files, and their boot tests' reports."""
    from vaultdoit.tasks.final import final_outputs, verify_report

    found: list[Path] = []
    for image in project.images:
        report = verify_report(project, image)
        found += [*final_outputs(project, image), report, report.with_name(report.stem + ".junit.xml")]
    return found


def _reports(project: Project) -> list[Path]:
    """The report folders: the shared stages', then each variant's."""
    from vaultdoit.tasks.common import reports

    return [reports(project), *(reports(project, v) for v in project.variants)]


def _key_files(project: Project) -> list[Path]:
    cfg = project.config
    return [p for k in (cfg.build_key, cfg.access_key) for p in (k, pubkey(k))]


def _db(project: Project) -> Path:
    from vaultdoit.state import db_path

    return db_path(project)


def stage_paths(project: Project, name: str) -> list[Path]:
    """A stage's files in the order an archive holds them: image, other outputs, build record."""
    stage = project.stage(name)
    return [stage.output, *stage.extra_outputs, stage.output.parent / owned.MARKER]


@contextlib.contextmanager
def _database_copy(path: Path) -> Iterator[Path | None]:
    """A consistent copy of doit's database (sqlite's backup), or None when there is none."""
    if not path.is_file():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vaultdoit-db-") as tmp:
        copy = Path(tmp) / path.name
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as src, \
                contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        yield copy


def export(project: Project, target: str, *, with_keys: bool = False) -> Contents:
    """Write the project's build state to ``target`` (a file name, or ``-`` for stdout)."""
    from vaultdoit.packer import interrupted

    cfg = project.config
    root = cfg.root
    contents = Contents(profile=cfg.profile)
    for stage in project.stages:
        record = owned.read_marker(stage.output.parent)
        paths = stage_paths(project, stage.id)
        if record is None or record.get("stage") != stage.id or interrupted(cfg.state_dir, stage) \
                or not all(p.is_file() for p in paths):
            continue
        contents.stages[stage.id] = {"key": record.get("key"), "image_sha256": record.get("image_sha256"),
                                       "files": [keys.relpath(p, root) for p in paths]}
    others = [*_final_files(project), *(p for folder in _reports(project) if folder.is_dir()
                                         for p in sorted(folder.iterdir()))]
    if with_keys:
        others += _key_files(project)
    contents.files = [keys.relpath(p, root) for p in others if p.is_file()]
    with _database_copy(_db(project)) as database, _output(target) as out, \
            tarfile.open(fileobj=out, mode=_mode(target), format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        if database is not None:
            contents.database = keys.relpath(_db(project), root)
        header = contents.to_json()
        info = tarfile.TarInfo(HEADER)
        info.size, info.mtime, info.mode = len(header), int(time.time()), 0o644
        tar.addfile(info, _BytesReader(header))
        for name in contents.stages:
            for rel in contents.stages[name]["files"]:
                tar.add(root / rel, arcname=rel, recursive=False)
        for rel in contents.files:
            tar.add(root / rel, arcname=rel, recursive=False)
        if database is not None and contents.database is not None:
            tar.add(database, arcname=contents.database, recursive=False)
    return contents


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        piece, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return piece


def _mode(target: str) -> str:
    """Streamed tar, compressed as the name says (CI caches compress themselves: plain is the default)."""
    if target.endswith((".tar.gz", ".tgz")):
        return "w|gz"
    if target.endswith((".tar.xz", ".txz")):
        return "w|xz"
    return "w|"


@contextlib.contextmanager
def _output(target: str) -> Iterator[IO[bytes]]:
    """``target`` opened for writing: written under a temporary name and renamed when complete."""
    if target == "-":
        yield sys.stdout.buffer
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as out:
            yield out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- import


@dataclass
class Imported:
    """The result of an import: what was put in place, what was refused and why."""

    stages: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one line each
    files: int = 0
    database: bool = False
    tasks: list[tuple[str, str | None]] = field(default_factory=list)  # adopt's verdicts


def _open(source: str) -> tarfile.TarFile:
    if source == "-":
        return tarfile.open(fileobj=sys.stdin.buffer, mode="r|*")
    try:
        return tarfile.open(source, mode="r|*")
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError(f"cannot read the archive: {exc}", file=source,
                          hint="give a file written by `vaultdoit cache export`") from None


def _header(tar: tarfile.TarFile, source: str) -> Contents:
    first = tar.next()
    if first is None or first.name != HEADER or not first.isfile() or first.size > HEADER_LIMIT:
        raise ConfigError(f"not a vaultdoit cache archive (no {HEADER} first)", file=source,
                          hint="give a file written by `vaultdoit cache export`")
    reader = tar.extractfile(first)
    assert reader is not None
    try:
        data = json.loads(reader.read())
    except ValueError:
        raise ConfigError(f"{HEADER} is not JSON", file=source, hint="export the archive again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"archive format {data.get('format') if isinstance(data, dict) else '?'} is not {FORMAT}",
                          file=source, hint="export it again with this version of vaultdoit")
    return Contents(profile=data.get("profile"), stages=dict(data.get("stages") or {}),
                    files=list(data.get("files") or []), database=data.get("database"))


def _allowed(project: Project, contents: Contents, with_keys: bool) -> dict[str, tuple[Path, str | None]]:
    """Every path this project accepts from the archive: relative path -> (target, stage or None)."""
    root = project.config.root
    names = {s.id for s in project.stages}
    allowed: dict[str, tuple[Path, str | None]] = {}
    for name in contents.stages:
        if name in names:
            for path in stage_paths(project, name):
                allowed[keys.relpath(path, root)] = (path, name)
    extra = [*_final_files(project), *(_key_files(project) if with_keys else [])]
    extra += [reports / Path(rel).name for reports in _reports(project) for rel in contents.files
              if Path(rel).parent == Path(keys.relpath(reports, root))
              and stage_files.REPORT_NAME.fullmatch(Path(rel).name)]
    for path in extra:
        allowed[keys.relpath(path, root)] = (path, None)
    if contents.database is not None:
        allowed[keys.relpath(_db(project), root)] = (_db(project), None)
    return allowed


def import_(project: Project, source: str, *, with_keys: bool = False) -> Imported:
    """Read an archive into the project, then record what is up to date (see the module text)."""
    from vaultdoit import packer, state

    cfg = project.config
    result = Imported()
    received: dict[Path, Path] = {}  # target -> temporary file
    digests: dict[Path, str] = {}
    with _open(source) as tar:
        contents = _header(tar, source)
        if contents.profile != cfg.profile:
            raise ConfigError(f"the archive holds profile {contents.profile!r}, not {cfg.profile!r}", file=source,
                              hint=f"import it with --profile {contents.profile}" if contents.profile else
                              "import it into the project it was exported from")
        allowed = _allowed(project, contents, with_keys)
        try:
            for member in tar:
                if member.name == HEADER:
                    continue
                entry = allowed.get(os.path.normpath(member.name))
                if entry is None or not member.isfile():
                    if entry is None:
                        result.refused.append(f"{member.name}: not a file of this project's build, skipped")
                    continue
                target = entry[0]
                tmp = stage_files.temporary(target, "import")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                reader = tar.extractfile(member)
                assert reader is not None
                with open(tmp, "wb") as out:
                    sink = stage_files.Receiver(out)
                    for piece in iter(lambda: reader.read(stage_files.PIECE), b""):
                        sink.write(piece)
                os.utime(tmp, (member.mtime, member.mtime))  # doit then sees the file as it was
                received[target] = tmp
                digests[target] = sink.digest
            result.database = _place(project, contents, received, digests, result)
        finally:
            stage_files.discard(*received.values())
    for name in result.stages:
        packer.recover(cfg.state_dir, project.stage(name))
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if result.database:
        # The archive's records describe its images: a stage refused here must not count as built
        # from them (an older image of this project's could be in its place).
        refused = [f"stage:{name}" for name in contents.stages if name not in result.stages]
        with contextlib.chdir(cfg.root):
            state.forget(project, state.db_path(project), refused)
    result.tasks = state.adopt(project, state.db_path(project))
    return result


def _place(project: Project, contents: Contents, received: dict[Path, Path], digests: dict[Path, str],
           result: Imported) -> bool:
    """Rename verified files into place: whole stages, then the other files; True if doit's database was taken."""
    names = {s.id for s in project.stages}
    for name, entry in contents.stages.items():
        if name not in names:
            result.refused.append(f"stage {name}: not a stage of this project, skipped")
            continue
        stage = project.stage(name)
        paths = stage_paths(project, name)
        marker_path = paths[-1]
        problem = None
        record = None
        if not all(p in received for p in paths):
            problem = "incomplete in the archive, skipped"
        elif digests[stage.output] != entry.get("image_sha256"):
            problem = "its image does not match the digest in its build record, discarded (it will be built)"
        else:
            try:
                record = json.loads(received[marker_path].read_text())
            except (OSError, ValueError):
                record = None
            if not isinstance(record, dict) or record.get("key") != entry.get("key"):
                problem = "its build record is damaged, discarded (it will be built)"
        mine = {p: received.pop(p) for p in paths if p in received}
        if problem is not None or record is None:
            stage_files.discard(*mine.values())
            result.refused.append(f"stage {name}: {problem}")
            continue
        stage_files.discard(mine.pop(marker_path))
        stage_files.install(stage.output, record, mine)
        result.stages.append(name)
    database = _db(project)
    taken = False
    for target in list(received):
        if target == database:
            if database.exists():
                continue  # this project's own records stay; adopt adds what the archive brought
            taken = True
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(received.pop(target), target)
        if target != database:
            result.files += 1
    return taken


def read_contents(source: str) -> Contents:
    """The header of an archive (what `cache import` would bring)."""
    with _open(source) as tar:
        return _header(tar, source)
