"""The record of each run: what ran, when, for how long, with what result, and what it made.

The reporter (reporter.py) fills one record per run and saves it under the
build's report folder (``<reports>/runs/<id>.json``) with its HTML report
and a JUnit file of the tasks; ``latest.*`` are copies of the newest ones.
Records also give the expected time of a task that is not a stage (a stage's
comes from the record beside its image). Only the newest ``KEEP`` runs stay.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FORMAT = 1
KEEP = 20  # runs kept in <reports>/runs
LATEST = "latest"


class TaskRun:
    """One task of a run, as the reporter saw it (a plain class: made on every run, no-op runs too)."""

    FIELDS = ("name", "doc", "meta", "result", "number", "started", "elapsed", "expected", "message", "facts")
    __slots__ = FIELDS

    def __init__(self, name: str, doc: str = "", meta: dict[str, Any] | None = None) -> None:
        self.name = name
        self.doc = doc
        self.meta: dict[str, Any] = meta or {}  # the task's "meta"["vaultdoit"]
        self.result = "not run"  # ran, up to date, failed, interrupted, not run, ignored
        self.number = 0  # its n of [n/N] (0: never reached)
        self.started: float | None = None  # epoch seconds
        self.elapsed: float | None = None
        self.expected: float | None = None  # from the last build
        self.message = ""  # why it failed
        self.facts: dict[str, Any] = {}  # size, build record, cache hits (see facts())


def folder(report_dir: Path) -> Path:
    return report_dir / "runs"


def new_id(started: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + f"-{os.getpid()}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stage_record(root: Path, image: str | None) -> dict[str, Any]:
    """The build record beside a stage's image ({} when there is none)."""
    from vaultdoit.owned import read_marker  # loaded with the plan already

    return (read_marker((root / image).parent) or {}) if image else {}


def facts(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What a task made, read from the files (cheap: stat and small JSON files)."""
    kind = meta.get("kind")
    found: dict[str, Any] = {}
    path = meta.get("image") or meta.get("file")
    if path:
        try:
            found["bytes"] = (root / path).stat().st_size
        except OSError:
            pass
    if kind == "stage":
        record = stage_record(root, meta.get("image"))
        for key in ("build_seconds", "finished", "image_bytes", "key", "apt"):
            if record.get(key) is not None:
                found[key] = record[key]
        kept = meta.get("failed_disk")
        if kept and (root / kept).is_file():
            found["failed_disk"] = {"path": kept, "kept_at": (root / kept).parent.stat().st_mtime}
        if meta.get("wheelhouse"):
            manifest = read_json(root / meta["wheelhouse"]) or {}
            found["wheels"] = len(manifest.get("wheels") or {})
    elif kind == "wheels" and meta.get("manifest"):
        manifest = read_json(root / meta["manifest"]) or {}
        wheels = manifest.get("wheels") or {}
        found["wheels"] = len(wheels)
        found["bytes"] = sum(_size(root / meta["manifest"], name) for name in wheels)
    elif kind == "verify" and meta.get("report"):
        report = read_json(root / meta["report"])
        if report is not None:
            found["boot"] = report
    return found


def _size(manifest: Path, name: str) -> int:
    try:
        return (manifest.parent / name).stat().st_size
    except OSError:
        return 0


def cache_hits(item: TaskRun) -> str:
    """``APT 118 of 130 from cache; 14 wheels from the wheelhouse`` (what the summary shows)."""
    parts = []
    apt = item.facts.get("apt")
    if isinstance(apt, dict) and apt.get("served_files"):
        hits = max(int(apt.get("served_files", 0)) - int(apt.get("upstream_files", 0)), 0)
        parts.append(f"APT {hits} of {apt['served_files']} from cache")
    if item.meta.get("kind") == "stage" and item.facts.get("wheels"):
        parts.append(f"{item.facts['wheels']} wheels from the wheelhouse")
    return "; ".join(parts)


def expected_times(report_dir: Path, names: list[str], limit: int = 10) -> dict[str, float]:
    """The last time each task of ``names`` ran, from the newest run records."""
    found: dict[str, float] = {}
    for path in sorted(folder(report_dir).glob("*.json"), reverse=True)[:limit]:
        record = read_json(path) or {}
        for task in record.get("tasks", []):
            name = task.get("name")
            if name in names and name not in found and task.get("result") == "ran" and task.get("elapsed"):
                found[name] = float(task["elapsed"])
        if len(found) == len(names):
            break
    return found


def save(report_dir: Path, record: dict[str, Any], html: str, junit_xml: str) -> Path:
    """Write the run's record, HTML report and JUnit file; return the HTML report's path."""
    from vaultdoit.files import write_atomic

    runs = folder(report_dir)
    stem = runs / record["id"]
    write_atomic(stem.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    write_atomic(stem.with_suffix(".junit.xml"), junit_xml)
    write_atomic(stem.with_suffix(".html"), html)
    # Fixed names for CI artifacts and `vaultdoit report`; copies, so a copied folder keeps them.
    write_atomic(runs / f"{LATEST}.junit.xml", junit_xml)
    write_atomic(runs / f"{LATEST}.html", html)
    prune(runs)
    return stem.with_suffix(".html")


def prune(runs: Path, keep: int = KEEP) -> None:
    """Remove all but the newest ``keep`` runs."""
    records = sorted(p for p in runs.glob("*.json"))
    for old in records[:-keep] if len(records) > keep else []:
        for suffix in (".json", ".html", ".junit.xml"):
            old.with_name(old.name.removesuffix(".json") + suffix).unlink(missing_ok=True)


def latest(report_dir: Path) -> Path | None:
    """The newest run's HTML report, if any run wrote one."""
    path = folder(report_dir) / f"{LATEST}.html"
    return path if path.is_file() else None


def to_dict(item: TaskRun) -> dict[str, Any]:
    return {name: getattr(item, name) for name in TaskRun.FIELDS}
