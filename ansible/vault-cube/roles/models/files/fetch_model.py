#!/usr/bin/env python3
"""Fetch one model repository at a fixed revision into a folder, every file verified.

  fetch_model.py --hub URL --repo NAME --revision COMMIT --include PATTERN... --dest DIR

The hub's tree listing of that revision gives each file's hash: large (LFS)
files by sha256, the others by git blob id. A file already in DIR with the
right hash is kept (the folder is a cache kept between builds); every other
file is downloaded beside it and renamed into place only once its hash
matches. A gated repository needs a token with access in HF_TOKEN (read from
the environment, never printed). DIR/.vault-model.json records what was
fetched. Standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


def _request(url: str) -> urllib.request.Request:
    headers = {"User-Agent": "vault-cube-build"}
    token = os.environ.get("HF_TOKEN", "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.Request(url, headers=headers)


def listing(hub: str, repo: str, revision: str) -> list[dict]:
    """Every file of the repository at ``revision`` (following the listing's pages)."""
    url: str | None = f"{hub}/api/models/{repo}/tree/{urllib.parse.quote(revision)}?recursive=true"
    files: list[dict] = []
    while url:
        with urllib.request.urlopen(_request(url), timeout=60) as response:
            files += [entry for entry in json.load(response) if entry.get("type") == "file"]
            link = response.headers.get("Link", "")
        url = None
        for part in link.split(","):
            if 'rel="next"' in part:
                url = part.split(";")[0].strip(" <>")
    return files


def expected(entry: dict) -> tuple[str, str]:
    """(algorithm, hex digest) the file must have."""
    lfs = entry.get("lfs")
    if lfs:
        return "sha256", lfs.get("oid") or lfs["sha256"]
    return "gitblob", entry["oid"]


def digest(path: Path, algorithm: str, size: int) -> str:
    h = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(hub: str, repo: str, revision: str, entry: dict, dest: Path) -> bool:
    """Make ``dest/<path>`` the verified file; True when it had to be downloaded."""
    algorithm, want = expected(entry)
    size = int(entry.get("size", 0))
    target = dest / entry["path"]
    if target.is_file() and target.stat().st_size == size and digest(target, algorithm, size) == want:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    url = f"{hub}/{repo}/resolve/{urllib.parse.quote(revision)}/{urllib.parse.quote(entry['path'])}"
    with urllib.request.urlopen(_request(url), timeout=120) as response, part.open("wb") as out:
        while chunk := response.read(CHUNK):
            out.write(chunk)
    got = digest(part, algorithm, size)
    if got != want:
        part.unlink()
        raise SystemExit(f"fetch_model: {repo}@{revision}: {entry['path']}: {algorithm} {got}, the hub lists {want}")
    os.replace(part, target)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hub", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--include", nargs="+", required=True)
    parser.add_argument("--dest", required=True, type=Path)
    args = parser.parse_args()
    try:
        files = listing(args.hub, args.repo, args.revision)
    except urllib.error.HTTPError as exc:
        gated = " (gated: HF_TOKEN must be a token with access)" if exc.code in (401, 403) else ""
        print(f"fetch_model: {args.repo}@{args.revision}: the hub answered {exc.code}{gated}", file=sys.stderr)
        return 1
    chosen = [f for f in files if any(fnmatch.fnmatch(f["path"], p) for p in args.include)]
    if not chosen:
        print(f"fetch_model: {args.repo}@{args.revision}: no file matches {args.include}", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    fetched = sum(fetch(args.hub, args.repo, args.revision, entry, args.dest) for entry in chosen)
    record = {"repo": args.repo, "revision": args.revision,
              "files": {f["path"]: dict(zip(("algorithm", "digest"), expected(f)), size=f.get("size"))
                        for f in chosen}}
    (args.dest / ".vault-model.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"fetch_model: {args.repo}@{args.revision}: {len(chosen)} files verified, {fetched} downloaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
