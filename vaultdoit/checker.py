"""A doit file-dependency checker that hashes a big image at most once per change.

doit's default ``MD5Checker`` compares (mtime, size, md5). When only the mtime
of an unchanged file moved (``touch``, a copy, a restore), it re-hashes the
whole file on every later run, because the stored state is refreshed only when
the task runs. For multi-GiB stage images that is seconds per image per run.

``BigFileChecker`` keeps doit's semantics for small files and, for big ones,
remembers digests in a small JSON sidecar keyed by the file's identity
(path, device, inode, size, mtime in ns). A no-op run only stats files; a
touched image is hashed once and then never again; a changed image is detected.

Use it through ``make_checker``::

    DOIT_CONFIG = {"check_file_uptodate": make_checker(Path("build/digests.json"))}

and call ``record_digest(image, cache_file)`` at the end of the action that
wrote ``image``, so doit's post-success ``get_state`` finds the digest cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.dependency import MD5Checker

# Files at least this big take the cached-digest path.
BIG_DEFAULT = 64 * 2**20

# sha256 rather than blake2b: with SHA-NI it hashed 1 GiB in 0.70-0.74 s on the
# build host, blake2b took 1.23-1.47 s (and md5 1.57-1.71 s).
ALGO = "sha256"

_FORMAT = 1

# One in-process lock for every sidecar: updates are rare (one per hashed
# image) so contention does not matter; flock below covers other processes.
_LOCK = threading.Lock()

State = tuple[float, int, str]


def hash_file(path: str | os.PathLike[str], algo: str = ALGO) -> tuple[str, os.stat_result | None]:
    """Return ("algo:hexdigest", stat) for the file; stat is None if it changed while being read."""
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        digest = hashlib.file_digest(f, algo).hexdigest()
        after = os.fstat(f.fileno())
    stable = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    return f"{algo}:{digest}", after if stable else None


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class DigestCache:
    """Sidecar JSON mapping absolute path -> identity and digest of its last known version.

    One entry per path is enough: lookups are always made with the file's
    current stat, so older identities of the same path can never match again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))
        self._entries: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        # A missing, truncated or foreign file only costs a re-hash: treat as empty.
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _match(entries: dict[str, Any], key: str, st: os.stat_result, algo: str) -> str | None:
        entry = entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            return None
        if {k: entry.get(k) for k in ("dev", "ino", "size", "mtime_ns")} != _identity(st):
            return None
        digest: str = entry["digest"]
        return digest if digest.startswith(algo + ":") else None

    def lookup(self, file_path: str | os.PathLike[str], st: os.stat_result, algo: str = ALGO) -> str | None:
        """Return the cached digest if the file still has identity ``st``, else None."""
        key = os.path.abspath(file_path)
        if self._entries is None:
            self._entries = self._read()
        found = self._match(self._entries, key, st, algo)
        if found is None:
            # Another process (a build action calling record_digest) may have
            # added it since we loaded; re-reading a few KiB beats hashing GiBs.
            self._entries = self._read()
            found = self._match(self._entries, key, st, algo)
        return found

    def store(self, file_path: str | os.PathLike[str], st: os.stat_result, digest: str) -> None:
        """Record ``digest`` for the file's identity ``st`` and write the sidecar atomically."""
        key = os.path.abspath(file_path)
        with _LOCK, self._file_lock():
            # Merge with what is on disk: other processes may have written since.
            entries = self._read()
            entries[key] = {**_identity(st), "digest": digest}
            entries = {p: e for p, e in entries.items() if os.path.exists(p)}
            self._write(entries)
            self._entries = entries

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, entries: dict[str, Any]) -> None:
        # No fsync: after a power loss a truncated sidecar reads as empty,
        # which costs one re-hash and never a wrong answer.
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": _FORMAT, "entries": entries}, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def cached_digest(
    cache: DigestCache, file_path: str | os.PathLike[str], st: os.stat_result, algo: str = ALGO
) -> str:
    """Digest of the file with identity ``st``: from the cache, else hashed once and cached."""
    found = cache.lookup(file_path, st, algo)
    if found is not None:
        return found
    digest, stable = hash_file(file_path, algo)
    if stable is not None:
        # Keyed by the stat taken with the file open, not ``st``: the file may
        # have been replaced in between, and the digest belongs to what we read.
        cache.store(file_path, stable, digest)
    return digest


def record_digest(path: Path, cache_file: Path, *, digest: str | None = None) -> str:
    """Hash a freshly built file (or take its sha256 ``digest`` if the caller computed it
    while writing) and record it in the sidecar; return "sha256:<hex>"."""
    if digest is None:
        digest, st = hash_file(path)
        if st is None:
            raise RuntimeError(f"{path} changed while it was being hashed")
    else:
        if ":" not in digest:
            digest = f"{ALGO}:{digest}"
        st = os.stat(path)
    DigestCache(cache_file).store(path, st, digest)
    return digest


def _as_state(state: Any) -> State | None:
    """Normalise a stored state to (mtime, size, "algo:hex"); None if unusable."""
    if not isinstance(state, (list, tuple)) or len(state) != 3:
        return None
    mtime, size, digest = state
    if not isinstance(digest, str):
        return None
    # doit's MD5 states hold a bare hex md5; ours always carry an "algo:" prefix.
    return mtime, size, digest if ":" in digest else f"md5:{digest}"


class BigFileChecker(MD5Checker):
    """doit checker: MD5 semantics below ``big`` bytes, cached digests at or above.

    State for big files is ``(mtime, size, "sha256:<hex>")``; JSON-serialisable
    like doit's own, so every dep DB backend stores it.
    """

    cache_file: Path = Path(".vaultdoit-digests.json")
    big: int = BIG_DEFAULT

    def __init__(self) -> None:
        # doit instantiates the checker with no arguments (Dependency.__init__).
        self.cache = DigestCache(self.cache_file)

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
        try:
            return self._modified(file_path, file_stat, state)
        except FileNotFoundError:
            raise  # doit reports a missing dependency itself
        except OSError:
            # Unreadable now: call it changed, so the task runs and its input
            # check reports the file in one line (doit would print a traceback).
            return True

    def _modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
        norm = _as_state(state)
        if norm is None:
            return True
        mtime, size, digest = norm
        algo = digest.split(":", 1)[0]
        if file_stat.st_size < self.big and algo == "md5":
            return bool(super().check_modified(file_path, file_stat, state))
        # Same order as MD5Checker: mtime equal -> same, size differs -> changed.
        if file_stat.st_mtime == mtime:
            return False
        if file_stat.st_size != size:
            return True
        try:
            return cached_digest(self.cache, file_path, file_stat, algo) != digest
        except ValueError:  # a hash algorithm this Python lacks: cannot prove equality
            return True

    def get_state(self, dep: str, current_state: Any) -> State | None:
        st = os.stat(dep)
        norm = _as_state(current_state)
        if st.st_size < self.big:
            # Do not let MD5Checker keep a big-file state for a file now small.
            small_state = current_state if norm is not None and norm[2].startswith("md5:") else None
            result: State | None = super().get_state(dep, small_state)
            return result
        if norm is not None and norm[2].startswith(ALGO + ":") and norm[0] == st.st_mtime and norm[1] == st.st_size:
            return None
        return st.st_mtime, st.st_size, cached_digest(self.cache, dep, st)


def check_readable(paths: list[str]) -> None:
    """Open each file for reading; the OSError of the first that cannot be read propagates."""
    for path in paths:
        with open(path, "rb"):
            pass


def make_checker(cache_file: Path, big: int = BIG_DEFAULT) -> type[BigFileChecker]:
    """Return a ``BigFileChecker`` subclass bound to ``cache_file`` for DOIT_CONFIG."""
    # Same class name as the base: doit stores the checker's class name per task
    # and re-runs every task whose name changed.
    return type(
        "BigFileChecker",
        (BigFileChecker,),
        {"cache_file": Path(os.path.abspath(cache_file)), "big": big, "__module__": __name__},
    )
