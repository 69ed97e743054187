"""A run's HTML report: one self-contained file (inline CSS and SVG, no script, no network).

Made from the run's record (runs.py): a timeline with one bar per task, the
stage graph, the stages' images and sizes with their APT proxy and
wheelhouse hits, the boot test's checks, the failures, and links to the logs
(relative to the report, so the build folder can be copied whole).
"""

from __future__ import annotations

import os
import time
from html import escape
from pathlib import Path
from typing import Any

from vaultdoit import graph, junit
from vaultdoit.progress import duration, size

BAR = {"ran": "#43a047", "up to date": "#90a4ae", "failed": "#e53935", "interrupted": "#fb8c00", "not run": "#cfd8dc",
       "ignored": "#cfd8dc"}

CSS = """
:root { --ink:#1d2733; --soft:#5b6b7c; --line:#e3e8ef; --card:#f7f9fc; --ok:#2e7d32; --bad:#c62828; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.sub { color: var(--soft); margin: 0 0 16px; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600; font-size: 13px;
         vertical-align: middle; margin-left: 8px; color: #fff; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 16px 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--soft); font-size: 12.5px; }
.card.bad b { color: var(--bad); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--soft); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.nowrap { white-space: nowrap; }
.path { font-size: 12.5px; }
.wide { overflow-x: auto; }
.pill { display: inline-block; padding: 0 8px; border-radius: 6px; font-size: 12.5px; white-space: nowrap; }
.pill.ran, .pill.pass { background: #e3f4e5; color: var(--ok); }
.pill.up { background: #eef2f6; color: #4f6478; }
.pill.failed, .pill.fail { background: #fde7e7; color: var(--bad); font-weight: 600; }
.pill.not { background: #f2f4f7; color: #7b8794; }
.figure { overflow-x: auto; border: 1px solid var(--line); border-radius: 10px; padding: 10px; background: #fff; }
.figure svg { display: block; max-width: 100%; height: auto; }
.legend { color: var(--soft); font-size: 12.5px; margin-top: 6px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin: 0 4px -2px 12px; }
pre.fail { background: #fff6f6; border: 1px solid #f3c7c7; border-radius: 8px; padding: 10px 12px;
           white-space: pre-wrap; word-break: break-word; max-height: 420px; overflow: auto; }
a { color: #1f5fbf; text-decoration: none; } a:hover { text-decoration: underline; }
.muted { color: var(--soft); }
footer { margin-top: 36px; color: var(--soft); font-size: 12px; }
"""


def _pill(result: str) -> str:
    cls = {"ran": "ran", "up to date": "up", "failed": "failed", "interrupted": "failed"}.get(result, "not")
    return f'<span class="pill {cls}">{escape(result)}</span>'


def _link(root: Path, path: str | None, here: Path, text: str | None = None) -> str:
    """A link from the report's folder to a project file, or the plain name when it is absent."""
    if not path:
        return '<span class="muted">—</span>'
    target = root / path
    shown = escape(text or path).replace("/", "/<wbr>")  # long paths break after a slash
    if not target.exists():
        return f'<span class="muted" title="not present">{shown}</span>'
    return f'<a href="{escape(os.path.relpath(target, here))}">{shown}</a>'


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "—"


def timeline(tasks: list[dict[str, Any]], started: float, finished: float) -> str:
    """One row per task: a bar from its start for its time, coloured by result, its last build's time
    as an outline behind it; a task that was up to date is a small mark when it was checked."""
    rows = list(tasks)
    span = max(finished - started, 1e-3)
    label_w, bar_w, row_h, top = 190, 760, 26, 30
    width, height = label_w + bar_w + 110, top + row_h * len(rows) + 12
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" font-family="system-ui, sans-serif" font-size="12.5">',
             "<title>timeline of the run</title>"]
    step = _tick(span)
    t = 0.0
    while t <= span + 1e-9:
        x = label_w + bar_w * t / span
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 8}" stroke="#eef1f5"/>')
        parts.append(f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle" fill="#8a97a6">{_short(t)}</text>')
        t += step
    for i, task in enumerate(sorted(rows, key=lambda r: (r.get("number") or 1e9))):
        y = top + i * row_h
        result = task.get("result", "not run")
        colour = BAR.get(result, "#cfd8dc")
        parts.append(f'<text x="{label_w - 10}" y="{y + 16}" text-anchor="end" fill="#1d2733">'
                     f'{escape(task["name"])}</text>')
        begin = task.get("started")
        if begin is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 16}" fill="#8a97a6">{escape(result)}</text>')
            continue
        x = label_w + bar_w * max(begin - started, 0) / span
        expected = task.get("expected")
        outline_end = x
        if expected and result in ("ran", "failed", "interrupted"):
            w = min(bar_w * expected / span, label_w + bar_w - x)
            outline_end = x + max(w, 1)
            parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{max(w, 1):.1f}" height="16" rx="3" fill="none" '
                         f'stroke="#9aa8b8" stroke-dasharray="3 2"><title>last build: {duration(expected)}'
                         "</title></rect>")
        elapsed = task.get("elapsed") or 0.0
        if result == "up to date" or not elapsed:
            parts.append(f'<path d="M{x:.1f},{y + 6} l5,6 l-5,6 l-5,-6 z" fill="{colour}">'
                         f"<title>{escape(task['name'])}: {escape(result)}</title></path>")
            note = result
        else:
            w = max(bar_w * elapsed / span, 2)
            parts.append(f'<rect x="{x:.1f}" y="{y + 5}" width="{w:.1f}" height="14" rx="3" fill="{colour}">'
                         f"<title>{escape(task['name'])}: {escape(result)} in {duration(elapsed)}</title></rect>")
            x += w
            note = duration(elapsed)
        parts.append(f'<text x="{max(x, outline_end) + 8:.1f}" y="{y + 16}" fill="#5b6b7c">{escape(note)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _tick(span: float) -> float:
    """A round step for about six gridlines over ``span`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 7:
            return step
    return 7200.0


def _short(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min" if seconds < 3600 else f"{seconds / 3600:g} h"


def stage_graph(tasks: list[dict[str, Any]]) -> str:
    results = {t["name"]: t.get("result", "") for t in tasks}
    details = {}
    for t in tasks:
        facts = t.get("facts") or {}
        bits = [size(facts["bytes"])] if facts.get("bytes") else []
        if t.get("result") == "ran" and t.get("elapsed"):
            bits.append(duration(t["elapsed"]))
        details[t["name"]] = ", ".join(bits)
    return graph.svg(graph.from_tasks([(t["name"], t.get("meta") or {}) for t in tasks],
                                      results=results, details=details))


def _apt(facts: dict[str, Any]) -> tuple[str, str]:
    apt = facts.get("apt")
    if not isinstance(apt, dict) or not apt.get("served_files"):
        return "—", "—"
    served, upstream = int(apt.get("served_files", 0)), int(apt.get("upstream_files", 0))
    return (f"{max(served - upstream, 0)} of {served}",
            f"{size(apt.get('upstream_bytes'))} of {size(apt.get('served_bytes'))}")


def html(record: dict[str, Any], here: Path) -> str:
    """The report's HTML text; ``here`` is the folder it is written to (for relative links)."""
    root = Path(record["root"])
    tasks: list[dict[str, Any]] = record["tasks"]
    counts = {r: sum(t.get("result") == r for t in tasks) for r in ("ran", "up to date", "failed", "not run")}
    total = record["finished"] - record["started"]
    ok = record["result"] == "ok"
    verdict = {"ok": "succeeded", "interrupted": "INTERRUPTED"}.get(record["result"], "FAILED")
    finals = [t for t in tasks if (t.get("meta") or {}).get("kind") == "final"]
    # One card per final image (each variant's), named when there are several.
    final_cards = [
        f'<div class="card"><b>{size(b) if (b := (t.get("facts") or {}).get("bytes")) else "—"}</b>'
        f'<span>final image{" " + escape(str(t["meta"].get("variant") or t["name"])) if len(finals) > 1 else ""}'
        f"</span></div>"
        for t in finals] or ['<div class="card"><b>—</b><span>final image</span></div>']
    accel = record.get("accelerator") or {}
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vaultdoit run {escape(record['id'])}: {escape(record['title'])}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{escape(record['title'])}<span class=\"badge {'ok' if ok else 'failed'}\">"
        f"{verdict}</span></h1>",
        f'<p class="sub"><code>{escape(record["command"])}</code> · {_when(record["started"])} · '
        f"{duration(total)}" + (f" · accelerator {escape(str(accel.get('accelerator')))}"
                                if accel.get("accelerator") else "") + "</p>",
        '<div class="cards">',
        f'<div class="card"><b>{counts["ran"]}</b><span>tasks ran</span></div>',
        f'<div class="card"><b>{counts["up to date"]}</b><span>up to date</span></div>',
        f'<div class="card{" bad" if counts["failed"] else ""}"><b>{counts["failed"]}</b><span>failed</span></div>',
        f'<div class="card"><b>{duration(total)}</b><span>run time</span></div>',
        *final_cards,
        "</div>",
    ]
    failures = [t for t in tasks if t.get("result") in ("failed", "interrupted")]
    if failures or record.get("errors"):
        out.append('<h2 id="failures">Failures</h2>')
        for t in failures:
            log = (t.get("meta") or {}).get("log")
            out.append(f"<p><b>{escape(t['name'])}</b> {'failed' if t['result'] == 'failed' else 'was interrupted'}"
                       f" after {duration(t.get('elapsed'))} · log: "
                       f"{_link(root, log, here)}</p><pre class=\"fail\">{escape(t.get('message') or '')}</pre>")
            kept = (t.get("facts") or {}).get("failed_disk")
            if kept and (t.get("meta") or {}).get("stage") and kept.get("kept_at", 0) >= record["started"] - 1:
                out.append(f"<p>The failed build's disk was kept: {_link(root, kept['path'], here)} · boot it with "
                           f"<code>vaultdoit run failed:{escape(t['meta']['stage'])}</code> (on a throwaway "
                           "snapshot), then <code>vaultdoit ssh</code>.</p>")
        for error in record.get("errors") or []:
            out.append(f'<pre class="fail">{escape(error)}</pre>')
    out += [
        '<h2 id="timeline">Timeline</h2>', f'<div class="figure">{timeline(tasks, record["started"], record["finished"])}'
        "</div>",
        '<p class="legend">' + "".join(f'<i style="background:{BAR[r]}"></i>{r}'
                                       for r in ("ran", "up to date", "failed", "not run"))
        + '<i style="border:1px dashed #9aa8b8"></i>last build\'s time</p>',
        '<h2 id="graph">Stage graph</h2>', f'<div class="figure">{stage_graph(tasks)}</div>',
    ]
    out += _stages(tasks, root, here)
    boots = [t for t in tasks if (t.get("meta") or {}).get("kind") == "verify"]
    if len(boots) <= 1:
        out += _boot(boots[0] if boots else None, root, here)
    else:  # several images (leaves or variants): one section per boot test
        for number, task in enumerate(boots):
            out += _boot(task, root, here, title=f"Boot test: {task['name']}",
                         anchor=f"boot-{number}" if number else "boot")
    out += ['<h2 id="tasks">Tasks and logs</h2>', "<table><thead><tr><th>#</th><th>task</th><th>result</th>"
            "<th>time</th><th>size</th><th>log</th></tr></thead><tbody>"]
    for t in sorted(tasks, key=lambda t: t.get("number") or 1e9):
        facts = t.get("facts") or {}
        out.append(f"<tr><td class=\"num\">{t.get('number') or ''}</td><td><b>{escape(t['name'])}</b><br>"
                   f"<span class=\"muted\">{escape(t.get('doc') or '')}</span></td><td>{_pill(t.get('result', ''))}"
                   f"</td><td class=\"num\">{duration(t.get('elapsed')) if t.get('elapsed') else '—'}</td>"
                   f"<td class=\"num\">{size(facts['bytes']) if facts.get('bytes') else '—'}</td>"
                   f"<td>{_link(root, (t.get('meta') or {}).get('log'), here, 'log')}</td></tr>")
    out.append("</tbody></table>")
    out.append(f'<footer>run {escape(record["id"])} in <code>{escape(str(root))}</code> · record: '
               f'<a href="{escape(record["id"])}.json">{escape(record["id"])}.json</a> · JUnit: '
               f'<a href="{escape(record["id"])}.junit.xml">{escape(record["id"])}.junit.xml</a></footer>')
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _stages(tasks: list[dict[str, Any]], root: Path, here: Path) -> list[str]:
    stages = [t for t in tasks if (t.get("meta") or {}).get("kind") in ("stage", "final")]
    if not stages:
        return []
    out = ['<h2 id="images">Images</h2>', '<div class="wide"><table><thead><tr><th>image</th><th>this run</th><th>size</th>'
           "<th>last build</th><th>built</th><th>APT from cache</th><th>APT upstream</th><th>wheelhouse</th>"
           "<th>log</th></tr></thead><tbody>"]
    for t in stages:
        meta, facts = t.get("meta") or {}, t.get("facts") or {}
        hits, upstream = _apt(facts)
        name = meta.get("stage") or "final image"
        kind = f"{meta.get('builder')} stage" if meta.get("kind") == "stage" else "flattened, compressed"
        finished = str(facts.get("finished") or "")  # 2026-11-28T21:26:10Z
        built = f'<span title="{escape(finished)}">{escape(finished[:16].replace("T", " "))}</span>' if finished else ""
        last = facts.get("build_seconds") if meta.get("kind") == "stage" else t.get("elapsed")
        wheels = f"{facts['wheels']} wheels" if facts.get("wheels") else "—"
        out.append(f"<tr><td><b>{escape(name)}</b> <span class=\"muted\">{escape(kind)}</span><br>"
                   f"<span class=\"path\">{_link(root, meta.get('image'), here)}</span></td><td>{_pill(t.get('result', ''))}</td>"
                   f"<td class=\"num\">{size(facts['bytes']) if facts.get('bytes') else '—'}</td>"
                   f"<td class=\"num\">{duration(last) if last else '—'}</td><td class=\"nowrap\">{built or '—'}</td>"
                   f"<td class=\"num\">{hits}</td><td class=\"num\">{upstream}</td><td>{wheels}</td>"
                   f"<td>{_link(root, meta.get('log'), here, 'log')}</td></tr>")
    out.append("</tbody></table></div>")
    return out


def _boot(task: dict[str, Any] | None, root: Path, here: Path, title: str = "Boot test",
          anchor: str = "boot") -> list[str]:
    out = [f'<h2 id="{anchor}">{escape(title)}</h2>']
    if task is None:
        return out + ['<p class="muted">not part of this run (<code>doit verify</code> runs it).</p>']
    boot = (task.get("facts") or {}).get("boot")
    meta = task.get("meta") or {}
    if task.get("result") in ("failed", "not run") or not isinstance(boot, dict):
        why = {"failed": "failed before its checks could run (see Failures)",
               "not run": "did not run: a task it needs failed"}.get(task.get("result", ""), "no report yet")
        if isinstance(boot, dict):
            why += " — below: the previous boot test"
        out.append(f'<p class="muted">{why}</p>')
        if not isinstance(boot, dict):
            return out
    state = "passed" if boot.get("ok") else "FAILED"
    out.append(f"<p>{_pill('ran' if boot.get('ok') else 'failed').replace('>ran<', '>' + state + '<')} "
               f"boot to SSH {duration(boot.get('boot_seconds'))}, power-off {duration(boot.get('shutdown_seconds'))}"
               f" ({escape(str(boot.get('accelerator')))}) · serial log: {_link(root, meta.get('log'), here)}"
               f" · JUnit: {_link(root, meta.get('junit'), here)}</p>")
    out.append("<table><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead><tbody>")
    for check in boot.get("checks") or []:
        ok = bool(check.get("ok"))
        out.append(f"<tr><td>{escape(str(check.get('name')))}</td><td><span class=\"pill {'pass' if ok else 'fail'}\">"
                   f"{'PASS' if ok else 'FAIL'}</span></td><td><code>{escape(str(check.get('detail') or ''))}"
                   "</code></td></tr>")
    out.append("</tbody></table>")
    return out


def tasks_junit(record: dict[str, Any]) -> str:
    """The run's tasks as JUnit: a failure for a failed task, skipped for one that did not run."""
    cases = []
    for t in record["tasks"]:
        result = t.get("result")
        outcome = {"failed": "failure", "interrupted": "error", "not run": "skipped",
                   "ignored": "skipped"}.get(result or "", "passed")
        cases.append(junit.Case(t["name"], "doit." + t["name"].split(":")[0], t.get("elapsed") or 0.0, outcome,
                                t.get("message") or (result if outcome == "skipped" else "") or "",
                                result if outcome == "passed" else ""))
    return junit.document(f"doit {record['title']}", cases, started=record["started"])

