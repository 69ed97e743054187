"""The ISO store: remote or outside-the-project images fetched once into cache/isos/ and verified.

Downloads resume after an interruption (HTTP Range); a partial file is never
taken for a complete one; a checksum mismatch deletes the file and reports
both digests. A verified file copied in by hand is used as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse

from vaultdoit import checker
from vaultdoit.errors import VaultError

CHUNK = 1 << 20
ALGOS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


class ChecksumError(VaultError):
    """The file's digest is not the one the template promises."""


def file_name(url: str) -> str:
    """The store's name for ``url``: its last path component."""
    name = os.path.basename(unquote(urlparse(url).path)) if "://" in url else os.path.basename(url)
    if not name:
        raise VaultError(f"cannot tell a file name from {url}", hint="point iso_url at a file")
    return name


def _open(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> Any:
    import urllib.request  # only when something is fetched (the planner imports this module)

    if "://" not in url:
        url = Path(url).resolve().as_uri()
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def check_spec(spec: str) -> str | None:
    """What is wrong with an ``iso_checksum`` (None: nothing), without fetching anything."""
    spec = spec.strip()
    if spec.lower() == "none" or not spec or spec.startswith("file:"):
        return None
    algo, _, digest = spec.rpartition(":")
    algo = algo.lower() or ALGOS.get(len(digest), "")
    if algo not in ALGOS.values():
        return f"unknown checksum type {algo or spec!r} (use sha256, sha512, sha1 or md5)"
    if not re.fullmatch(r"[0-9a-fA-F]+", digest) or ALGOS.get(len(digest)) != algo:
        return f"{digest!r} is not a {algo} digest"
    return None


def parse_checksum(spec: str, url: str) -> tuple[str, str] | None:
    """(algorithm, hex digest) from an ``iso_checksum``; None for ``none``.

    Accepts ``algo:hex``, a bare hex digest, and ``file:URL`` (a SHA256SUMS-style
    list in which the line naming the file holds its digest).
    """
    spec = spec.strip()
    if spec.lower() == "none" or not spec:
        return None
    if spec.startswith("file:"):
        return _from_list(spec[len("file:"):], url)
    problem = check_spec(spec)
    if problem:
        raise VaultError(f"iso_checksum {spec!r}: {problem}", hint='use "sha256:<hex>", "file:<url>" or "none"')
    if ":" in spec:
        algo, digest = spec.split(":", 1)
        return algo.lower(), digest.lower()
    if len(spec) in ALGOS:
        return ALGOS[len(spec)], spec.lower()
    raise VaultError(f"cannot read iso_checksum {spec!r}", hint='use "sha256:<hex>", "file:<url>" or "none"')


def _from_list(list_url: str, url: str) -> tuple[str, str]:
    try:
        with _open(list_url, timeout=30) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read the checksum list {list_url}: {exc}",
                         hint="check the URL, or give iso_checksum as sha256:<hex>") from None
    name = file_name(url)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-1].lstrip("*").lstrip("./") == name and len(parts[0]) in ALGOS:
            return ALGOS[len(parts[0])], parts[0].lower()
        match = re.match(r"^(\w+) \((.+)\) = ([0-9a-fA-F]+)$", line)  # BSD style
        if match and os.path.basename(match.group(2)) == name:
            return match.group(1).lower(), match.group(3).lower()
    raise VaultError(f"{name} is not listed in {list_url}", hint="check the checksum list or iso_url")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("checksum"), str) else None


def is_verified(path: Path) -> bool:
    """True when ``path`` is exactly the file that was verified (same size, mtime and inode)."""
    record = _record(path)
    try:
        return record is not None and record.get("identity") == _identity(path.stat())
    except OSError:
        return False


def _verify(path: Path, expected: tuple[str, str] | None) -> str:
    """Check ``path`` against ``expected``; remember what was verified; return "algo:hex"."""
    if expected is None:
        _sidecar(path).unlink(missing_ok=True)
        return "none"
    algo, want = expected
    digest, st = checker.hash_file(path, algo)
    got = digest.split(":", 1)[1]
    if got != want:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        raise ChecksumError(f"{algo} mismatch: expected {want}, got {got}; the file was deleted",
                            file=path, hint="check iso_url and iso_checksum, then run again")
    if st is not None:
        tmp = _sidecar(path).with_suffix(".tmp")
        tmp.write_text(json.dumps({"checksum": digest, "identity": _identity(st)}, sort_keys=True))
        os.replace(tmp, _sidecar(path))
    return digest


def verified(path: Path, checksum: str, url: str) -> str:
    """The checksum ``path`` was verified against ("algo:hex"), re-verifying it first when the
    file changed since (size, mtime or inode): a tampered copy is refused, never re-hashed
    into a new checksum."""
    record = _record(path)
    if record is not None and is_verified(path):
        return str(record["checksum"])
    if record is not None:
        algo, _, want = str(record["checksum"]).partition(":")
        return _verify(path, (algo, want))
    return _verify(path, parse_checksum(checksum, url))


def verify_all(store: Path) -> list[tuple[Path, str | None]]:
    """Re-hash every verified file of the store: (file, problem or None)."""
    results: list[tuple[Path, str | None]] = []
    for sidecar in sorted(store.glob("*.verified")) if store.is_dir() else []:
        path = sidecar.with_name(sidecar.name[: -len(".verified")])
        record = _record(path)
        if record is None or not path.is_file():
            results.append((path, "missing" if record is not None else "unreadable record"))
            continue
        algo, _, want = str(record["checksum"]).partition(":")
        try:
            _verify(path, (algo, want))
            results.append((path, None))
        except ChecksumError as err:
            results.append((path, err.message))
    return results


def _download(url: str, part: Path) -> None:
    from vaultdoit import progress

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _open(url, headers=headers)
    except HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            return
        raise
    with resp:
        resumed = have and getattr(resp, "status", 200) == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        with part.open(mode) as out, progress.meter(f"download {file_name(url)}", total) as meter:
            meter.update(done)
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                meter.update(done)
    if total is not None and part.stat().st_size != total:
        raise VaultError(f"download of {url} ended early ({part.stat().st_size} of {total} bytes)",
                         file=part, hint="run again: the download resumes")


def fetch(url: str, checksum: str, store: Path) -> Path:
    """Make ``url`` present and verified in ``store``; return its path there."""
    store.mkdir(parents=True, exist_ok=True)
    target = store / file_name(url)
    expected = parse_checksum(checksum, url)
    if target.exists():
        record = _record(target)
        if expected is not None and record is not None and is_verified(target) \
                and record["checksum"] == f"{expected[0]}:{expected[1]}":
            return target  # verified against this checksum before, unchanged since
        _verify(target, expected)  # a file copied in by hand is welcome once it verifies
        return target
    part = target.with_name(target.name + ".part")
    try:
        if url.startswith("file://") or "://" not in url:
            src = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
            shutil.copyfile(src, part)
        else:
            _download(url, part)
    except (OSError, URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise VaultError(f"cannot fetch {url}: {reason}", file=target,
                         hint=f"on a machine without network, put the file at {target} "
                              "(it is checked against iso_checksum)") from None
    _verify(part, expected)
    os.replace(part, target)  # a rename keeps the identity the record holds
    if _sidecar(part).exists():
        os.replace(_sidecar(part), _sidecar(target))
    return target
