"""The planned project, kept between runs while nothing it was read from has changed.

Planning reads vault.toml, every template and every playbook, role and input
file, and imports python-hcl2 and PyYAML; a run that changes nothing should
cost a few stat calls instead. While the planner runs, every file system call
it makes (stat, open, directory listings) and every environment variable it
reads is recorded; the cache is used only if each of them gives the same
answer now. Files changed within the last seconds before planning finished
make the plan not worth keeping (their next change could keep the same mtime),
so such a plan is not stored: the cache is never stale, only sometimes cold.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FORMAT = 1
RACY_SECONDS = 2.0  # a file modified this close to planning may change again unseen

Signature = tuple[Any, ...]


def _signature(path: str, how: str) -> Signature:
    """What a recorded call saw: ``stat`` follows symlinks, ``lstat`` does not, ``list`` is a
    folder's listing (its mtime moves when an entry is added, removed or renamed)."""
    try:
        st = os.lstat(path) if how == "lstat" else os.stat(path)
    except OSError as exc:
        return ("missing", exc.errno)
    if how == "list":
        return ("dir", st.st_mtime_ns, st.st_ino)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)  # it exists; what is in it is recorded by listings
    return ("file", st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)


class _Recorder:
    """Records the paths and environment variables read while it is active."""

    def __init__(self) -> None:
        self.paths: dict[tuple[str, str], None] = {}
        self.env: dict[str, str | None] = {}
        self.newest = 0  # newest mtime (ns) among the files seen

    def path(self, path: Any, how: str) -> None:
        if isinstance(path, int):  # a file descriptor: its path was recorded when it was opened
            return
        try:
            text = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if text.startswith(_IGNORED):
            return
        self.paths.setdefault((text, how), None)


# Python's own files: the interpreter and libraries are covered by the code stamp below.
_IGNORED = tuple({p.rstrip(os.sep) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


class _RecordingEnviron(dict):
    """A stand-in for os.environ that remembers which variables were looked at."""

    def __init__(self, real: Mapping[str, str], recorder: _Recorder) -> None:
        super().__init__(real)
        self._recorder = recorder

    def __getitem__(self, key: str) -> str:
        self._recorder.env[key] = dict.get(self, key)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._recorder.env[key] = dict.get(self, key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._recorder.env[key] = dict.get(self, key)
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        # Every variable is read: any change of the environment makes the plan stale.
        for key in dict.keys(self):
            self._recorder.env[key] = dict.get(self, key)
        return dict.__iter__(self)

    def keys(self) -> Any:
        list(self.__iter__())
        return dict.keys(self)

    def items(self) -> Any:
        list(self.__iter__())
        return dict.items(self)

    def copy(self) -> dict[str, str]:
        list(self.__iter__())
        return dict(dict.items(self))


@contextmanager
def _recording() -> Iterator[_Recorder]:
    """Record what the planner reads (single-threaded: planning runs before any task)."""
    recorder = _Recorder()
    real_stat, real_lstat, real_scandir, real_listdir = os.stat, os.lstat, os.scandir, os.listdir
    real_open, real_io_open, real_environ = builtins.open, io.open, os.environ

    def stat_(path: Any, *args: Any, **kwargs: Any) -> Any:
        recorder.path(path, "lstat" if kwargs.get("follow_symlinks") is False else "stat")
        return real_stat(path, *args, **kwargs)

    def lstat_(path: Any, *args: Any, **kwargs: Any) -> Any:
        recorder.path(path, "lstat")
        return real_lstat(path, *args, **kwargs)

    def scandir_(path: Any = ".") -> Any:
        recorder.path(path, "list")
        return real_scandir(path)

    def listdir_(path: Any = ".") -> Any:
        recorder.path(path, "list")
        return real_listdir(path)

    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        recorder.path(file, "stat")
        return real_open(file, *args, **kwargs)

    patched: dict[str, Any] = {"stat": stat_, "lstat": lstat_, "scandir": scandir_, "listdir": listdir_,
                               "environ": _RecordingEnviron(real_environ, recorder)}
    saved = {name: getattr(os, name) for name in patched}
    for name, value in patched.items():
        setattr(os, name, value)
    builtins.open = io.open = open_
    try:
        yield recorder
    finally:
        for name, value in saved.items():
            setattr(os, name, value)
        builtins.open, io.open = real_open, real_io_open


def _code_stamp() -> tuple[Any, ...]:
    """vaultdoit's own source files and the Python running it: a new version plans afresh."""
    package = Path(__file__).parent
    stamps = []
    for folder in (package, package / "tasks"):
        with os.scandir(folder) as entries:
            stamps += sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                             for e in entries if e.name.endswith(".py"))
    return (FORMAT, sys.version, tuple(stamps))


def cached(path: Path, plan: Callable[[], T]) -> T:
    """``plan()``'s result, from ``path`` when everything it read is unchanged."""
    stamp = _code_stamp()
    found = _read(path, stamp)
    if found is not None:
        return found
    start = time.time()
    # The cache's own folder exists before planning looks around (build/ included), so that
    # writing the cache does not change what planning saw.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only build folder: plan every time
    with _recording() as recorder:
        result = plan()
    _write(path, stamp, result, recorder, start)
    return result


def _read(path: Path, stamp: tuple[Any, ...]) -> Any:
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - our own file in the project's build folder
    except Exception:  # noqa: BLE001 - missing, damaged or from another version: plan again
        return None
    if not isinstance(data, dict) or data.get("stamp") != stamp:
        return None
    for (where, how), seen in data["paths"]:
        if _signature(where, how) != seen:
            return None
    for key, value in data["env"]:
        if os.environ.get(key) != value:
            return None
    return data["result"]


def _write(path: Path, stamp: tuple[Any, ...], result: Any, recorder: _Recorder, start: float) -> None:
    """Keep the plan; any failure (read-only build folder, unpicklable plan) only costs speed."""
    paths = [((where, how), _signature(where, how)) for where, how in recorder.paths]
    limit = (start - RACY_SECONDS) * 1e9
    racy = any(sig[0] in ("file", "dir") and len(sig) > 2 and sig[1] > limit for _, sig in paths)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        if racy:  # keep no plan rather than one that could go stale unseen
            path.unlink(missing_ok=True)
            return
        data = {"stamp": stamp, "paths": paths, "env": sorted(recorder.env.items()), "result": result}
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
