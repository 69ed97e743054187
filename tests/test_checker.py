"""Tests for vaultdoit.checker: cached digests for big file_deps, MD5 semantics for small ones."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from doit import dependency
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

# Import from the source tree when the package is not installed.

from vaultdoit import checker  # noqa: E402
from vaultdoit.checker import ALGO, BigFileChecker, DigestCache, make_checker, record_digest  # noqa: E402

BIG = 1024  # threshold used in the tests: files of >= 1 KiB take the cached path


class Spy:
    """Counts calls to a wrapped function."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self.fn(*args, **kwargs)

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(checker.hash_file)
    monkeypatch.setattr(checker, "hash_file", spy)
    return spy


@pytest.fixture
def md5s(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(dependency.get_file_md5)
    monkeypatch.setattr(dependency, "get_file_md5", spy)
    return spy


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> Path:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """A `touch` that is certainly visible whatever the filesystem's timestamp granularity."""
    mtime = path.stat().st_mtime_ns + seconds * 10**9
    os.utime(path, ns=(mtime, mtime))


def new_checker(tmp_path: Path, big: int = BIG) -> BigFileChecker:
    return make_checker(tmp_path / "digests.json", big=big)()


def roundtrip(state: Any) -> Any:
    """What doit's json/sqlite3 backends hand back."""
    return json.loads(json.dumps(state))


def check(chk: BigFileChecker, path: Path, state: Any) -> bool:
    return chk.check_modified(str(path), os.stat(path), state)


# --- big files -------------------------------------------------------------------


def test_state_is_json_and_uses_sha256(tmp_path: Path) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = new_checker(tmp_path).get_state(str(img), None)
    assert state is not None
    assert roundtrip(state) == list(state)
    assert state[0] == img.stat().st_mtime and state[1] == 4096
    assert state[2].startswith(f"{ALGO}:")


def test_noop_does_not_hash(tmp_path: Path, hashes: Spy) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    assert hashes.count == 1
    for _ in range(3):
        assert check(new_checker(tmp_path), img, state) is False
    assert hashes.count == 1


def test_touch_hashes_once_then_never(tmp_path: Path, hashes: Spy) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    bump_mtime(img)
    assert check(new_checker(tmp_path), img, state) is False
    assert hashes.count == 2
    # Later runs (fresh checker, same stale state, as doit does not refresh it).
    assert check(new_checker(tmp_path), img, state) is False
    assert check(new_checker(tmp_path), img, state) is False
    assert hashes.count == 2


def test_get_state_reuses_digest_from_check(tmp_path: Path, hashes: Spy) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    chk = new_checker(tmp_path)
    state = roundtrip(chk.get_state(str(img), None))
    write(img, os.urandom(4096))
    bump_mtime(img)
    assert check(chk, img, state) is True
    assert hashes.count == 2
    new_state = chk.get_state(str(img), state)
    assert hashes.count == 2
    assert new_state is not None and new_state[2] != state[2]
    # Unchanged file: get_state reports "no change" without any I/O.
    assert chk.get_state(str(img), roundtrip(new_state)) is None


def test_same_size_content_change_detected(tmp_path: Path, hashes: Spy) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    write(img, os.urandom(4096), mtime_ns=img.stat().st_mtime_ns + 5 * 10**9)
    assert check(new_checker(tmp_path), img, state) is True


def test_replaced_file_with_forced_cached_mtime_detected(tmp_path: Path) -> None:
    """A new file renamed over the image, its mtime forced to the one the sidecar
    has cached: same path, size and mtime, but another inode, so it is re-hashed."""
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    bump_mtime(img)
    assert check(new_checker(tmp_path), img, state) is False  # caches the touched identity
    cached_mtime = img.stat().st_mtime_ns
    other = write(tmp_path / "new.img", os.urandom(4096), mtime_ns=cached_mtime)
    keep_alive = os.open(img, os.O_RDONLY)  # keep the old inode number from being reused
    try:
        os.replace(other, img)
        assert img.stat().st_mtime_ns == cached_mtime
        assert check(new_checker(tmp_path), img, state) is True
    finally:
        os.close(keep_alive)


def test_equal_mtime_means_unchanged_without_io(tmp_path: Path, hashes: Spy) -> None:
    """doit's own rule: an equal mtime is trusted, even if the content was rewritten."""
    img = write(tmp_path / "a.img", os.urandom(4096))
    mtime = img.stat().st_mtime_ns
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    write(img, os.urandom(4096), mtime_ns=mtime)
    assert check(new_checker(tmp_path), img, state) is False
    assert hashes.count == 1


def test_size_change_detected_without_hashing(tmp_path: Path, hashes: Spy) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    write(img, os.urandom(8192))
    bump_mtime(img)
    assert check(new_checker(tmp_path), img, state) is True
    assert hashes.count == 1


def test_record_digest_prefills_get_state(tmp_path: Path, hashes: Spy) -> None:
    cache = tmp_path / "digests.json"
    img = write(tmp_path / "a.img", os.urandom(4096))
    digest = record_digest(img, cache)
    assert hashes.count == 1
    state = new_checker(tmp_path).get_state(str(img), None)
    assert state is not None and state[2] == digest
    assert hashes.count == 1


def test_record_digest_accepts_precomputed_digest(tmp_path: Path, hashes: Spy) -> None:
    import hashlib

    data = os.urandom(4096)
    img = write(tmp_path / "a.img", data)
    digest = record_digest(img, tmp_path / "digests.json", digest=hashlib.sha256(data).hexdigest())
    assert digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    state = new_checker(tmp_path).get_state(str(img), None)
    assert state is not None and state[2] == digest
    assert hashes.count == 0


# --- small files: exactly doit's MD5Checker --------------------------------------


@pytest.mark.parametrize(
    "change, modified",
    [("none", False), ("touch", False), ("content", True), ("size", True)],
)
def test_small_files_behave_like_md5checker(tmp_path: Path, hashes: Spy, change: str, modified: bool) -> None:
    f = write(tmp_path / "site.yml", b"- hosts: all\n")
    ours, theirs = new_checker(tmp_path), dependency.MD5Checker()
    state = ours.get_state(str(f), None)
    assert state == theirs.get_state(str(f), None)
    if change in ("touch", "content"):
        if change == "content":
            write(f, b"- hosts: web\n")
        bump_mtime(f)
    elif change == "size":
        write(f, b"- hosts: webservers\n")
        bump_mtime(f)
    st = os.stat(f)
    assert ours.check_modified(str(f), st, roundtrip(state)) is modified
    assert theirs.check_modified(str(f), st, roundtrip(state)) is modified
    assert ours.get_state(str(f), roundtrip(state)) == theirs.get_state(str(f), roundtrip(state))
    assert hashes.count == 0  # never the sidecar path
    assert not (tmp_path / "digests.json").exists()


def test_threshold_change_keeps_working(tmp_path: Path, hashes: Spy) -> None:
    """A state recorded as MD5 for a file now over the threshold is still compared
    correctly, and its md5 is computed at most once."""
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path, big=10**9).get_state(str(img), None))
    assert ":" not in state[2]
    bump_mtime(img)
    assert check(new_checker(tmp_path), img, state) is False
    assert check(new_checker(tmp_path), img, state) is False
    assert [c[1] for c in hashes.calls] == ["md5"]


# --- sidecar ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"format": 1, "entries": {"x": 3}}'])
def test_corrupt_sidecar_is_tolerated(tmp_path: Path, hashes: Spy, content: bytes) -> None:
    img = write(tmp_path / "a.img", os.urandom(4096))
    state = roundtrip(new_checker(tmp_path).get_state(str(img), None))
    (tmp_path / "digests.json").write_bytes(content)
    bump_mtime(img)
    assert check(new_checker(tmp_path), img, state) is False
    assert hashes.count == 2
    data = json.loads((tmp_path / "digests.json").read_text())
    assert str(img) in data["entries"]


def test_sidecar_pruned_and_written_atomically(tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    a = write(tmp_path / "a.img", os.urandom(4096))
    b = write(tmp_path / "b.img", os.urandom(4096))
    record_digest(a, cache)
    a.unlink()
    record_digest(b, cache)
    entries = json.loads(cache.read_text())["entries"]
    assert list(entries) == [str(b)]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_one_entry_per_path(tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    a = write(tmp_path / "a.img", os.urandom(4096))
    record_digest(a, cache)
    write(a, os.urandom(4096))
    bump_mtime(a)
    digest = record_digest(a, cache)
    entries = json.loads(cache.read_text())["entries"]
    assert entries[str(a)]["digest"] == digest and len(entries) == 1


def test_concurrent_updates_keep_every_entry(tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    files = [write(tmp_path / f"{i}.img", os.urandom(2048)) for i in range(16)]
    chk = make_checker(cache, big=BIG)()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                record_digest(files[i], cache)
            else:
                chk.get_state(str(files[i]), None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(json.loads(cache.read_text())["entries"]) == sorted(str(f) for f in files)
    assert DigestCache(cache).lookup(files[3], files[3].stat()) is not None


def test_class_is_instantiated_without_arguments_and_keeps_its_name(tmp_path: Path) -> None:
    cls = make_checker(tmp_path / "d.json", big=BIG)
    assert cls.__name__ == BigFileChecker.__name__  # doit re-runs tasks whose checker name changes
    assert issubclass(cls, dependency.FileChangedChecker)
    assert cls().cache.path == tmp_path / "d.json"


# --- end to end through doit ----------------------------------------------------


def chain_module(tmp_path: Path, runs: list[str]) -> dict[str, Any]:
    """src.txt -> [base] -> base.img (big) -> [child] -> child.img"""
    src, base, child = tmp_path / "src.txt", tmp_path / "base.img", tmp_path / "child.img"
    cache = tmp_path / "digests.json"

    def build_base() -> None:
        runs.append("base")
        base.write_bytes(src.read_bytes() * 512)
        record_digest(base, cache)

    def build_child() -> None:
        runs.append("child")
        child.write_bytes(base.read_bytes()[:100])

    def task_base() -> dict[str, Any]:
        return {"actions": [build_base], "file_dep": [str(src)], "targets": [str(base)]}

    def task_child() -> dict[str, Any]:
        return {"actions": [build_child], "file_dep": [str(base)], "targets": [str(child)]}

    return {
        "task_base": task_base,
        "task_child": task_child,
        "DOIT_CONFIG": {
            "dep_file": str(tmp_path / "doit-db.json"),
            "backend": "json",
            "check_file_uptodate": make_checker(cache, big=BIG),
            "verbosity": 0,
        },
    }


@pytest.mark.parametrize("opts", [[], ["-n", "2", "-P", "thread"]], ids=["serial", "threads"])
def test_doit_chain_end_to_end(tmp_path: Path, hashes: Spy, opts: list[str]) -> None:
    runs: list[str] = []
    module = chain_module(tmp_path, runs)
    base = tmp_path / "base.img"
    (tmp_path / "src.txt").write_bytes(b"0123456789abcdef")

    def doit() -> list[str]:
        runs.clear()
        hashes.calls.clear()
        assert DoitMain(ModuleTaskLoader(module)).run(opts) == 0
        return sorted(runs)

    # First build: the action records base.img's digest, so doit's post-success
    # get_state for "child" hashes nothing more.
    assert doit() == ["base", "child"]
    assert hashes.count == 1

    # No-op: nothing runs, nothing hashed.
    assert doit() == []
    assert hashes.count == 0

    # Touch the big intermediate image: nothing rebuilds; hashed once, then never.
    bump_mtime(base)
    assert doit() == []
    assert hashes.count == 1
    assert doit() == []
    assert hashes.count == 0

    # Same size, new content: the child rebuilds, the base does not.
    data = bytearray(base.read_bytes())
    data[0] ^= 0xFF
    base.write_bytes(bytes(data))
    bump_mtime(base, 20)
    assert doit() == ["child"]
    assert hashes.count == 1  # the check's digest is reused by get_state
    assert doit() == []
    assert hashes.count == 0

    # Touching the small source keeps MD5 semantics: nothing rebuilds.
    bump_mtime(tmp_path / "src.txt")
    assert doit() == []
