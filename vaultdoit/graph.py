"""The stage graph as a picture: SVG (drawn here, no Graphviz needed), DOT and Mermaid.

Nodes are the stages, the final image and its boot test, and the cache
tasks stages take files from (a fetched ISO, the wheelhouse); edges go from
what is used to what uses it. The graph is read from the tasks' ``meta``
(tasks/stages.py), so a run's record draws the same graph as the project.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

# Fill and border of a node by the result of its task in a run ("" = no run: the plain look).
COLOURS = {
    "ran": ("#e3f4e5", "#2e7d32"),
    "up to date": ("#eef2f6", "#7b8fa3"),
    "failed": ("#fde7e7", "#c62828"),
    "interrupted": ("#fff3e0", "#ef6c00"),
    "not run": ("#ffffff", "#b0b8c0"),
    "": ("#f4f6fb", "#4a5a78"),
}
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 152, 56, 44, 26, 14


@dataclass
class Node:
    name: str  # the task's name
    label: str  # what the box says in bold
    detail: str = ""  # the second line (size, time)
    kind: str = ""  # stage, final, verify, iso, wheels
    result: str = ""  # ran, up to date, failed, not run ("" outside a run)


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)


def from_tasks(tasks: Iterable[tuple[str, Mapping[str, Any]]], *, results: Mapping[str, str] | None = None,
               details: Mapping[str, str] | None = None) -> Graph:
    """The graph of tasks given as (name, meta["vaultdoit"]) pairs, in definition order."""
    graph = Graph()
    metas = {name: meta for name, meta in tasks}
    results, details = results or {}, details or {}
    wanted = [n for n, m in metas.items() if m.get("kind") in ("stage", "final", "verify")]
    used = {u for n in wanted for u in metas[n].get("uses") or []}
    for name, meta in metas.items():
        if name not in wanted and name not in used:
            continue
        # A fetched image is named by its file (the task's name repeats it after "cache:iso-").
        label = str(meta.get("stage") or (str(meta["file"]).rsplit("/", 1)[-1] if meta.get("file") else name))
        graph.nodes.append(Node(name, label, details.get(name, ""), str(meta.get("kind", "")), results.get(name, "")))
    names = {n.name for n in graph.nodes}
    stage_task = {str(m.get("stage")): n for n, m in metas.items() if m.get("kind") == "stage"}
    for name, meta in metas.items():
        if name not in names:
            continue
        kind = meta.get("kind")
        if kind == "stage":
            if meta.get("parent") in stage_task:
                graph.edges.append((stage_task[meta["parent"]], name))
            graph.edges.extend((used_by, name) for used_by in meta.get("uses") or [] if used_by in names)
        elif kind == "final" and meta.get("top") in stage_task:
            graph.edges.append((stage_task[meta["top"]], name))
        elif kind == "verify":
            # Its own image's final task (several images: each boot test has one); else every final.
            finals = [meta["final"]] if meta.get("final") in names else [
                n for n, m in metas.items() if m.get("kind") == "final" and n in names]
            graph.edges.extend((n, name) for n in finals)
    return graph


# --- layout ------------------------------------------------------------------------------------


def layout(graph: Graph) -> dict[str, tuple[int, int]]:
    """Column (rank) and row of every node: left to right by dependency, caches below what uses them."""
    parents: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
    children: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
    for a, b in graph.edges:
        parents[b].append(a)
        children[a].append(b)
    caches = {n.name for n in graph.nodes if not parents[n.name] and n.kind in ("iso", "wheels")}
    rank: dict[str, int] = {}

    def rank_of(name: str) -> int:
        # The planner refuses cycles, so this ends.
        if name not in rank:
            rank[name] = 1 + max((rank_of(p) for p in parents[name] if p not in caches), default=-1)
        return rank[name]

    for node in graph.nodes:
        rank_of(node.name)
    # A cache sits one column before the first node that uses it (below it if that is the first column).
    for name in caches:
        if children[name]:
            rank[name] = max(min(rank[c] for c in children[name]) - 1, 0)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    main = [n for n in graph.nodes if n.kind in ("stage", "final", "verify")]
    for node in main + [n for n in graph.nodes if n not in main]:
        column = rank[node.name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        place[node.name] = (column, row)
    return place


# --- SVG ---------------------------------------------------------------------------------------


def svg(graph: Graph, title: str = "stage graph") -> str:
    """The graph drawn as standalone SVG (boxes, arrows, two lines of text per box)."""
    if not graph.nodes:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40" role="img"><title>{escape(title)}' \
               '</title><text x="10" y="25" font-family="sans-serif" font-size="13">no stages</text></svg>'
    place = layout(graph)
    columns = max(c for c, _ in place.values()) + 1
    rows = max(r for _, r in place.values()) + 1
    width = 2 * PAD + columns * NODE_W + (columns - 1) * GAP_X
    height = 2 * PAD + rows * NODE_H + (rows - 1) * GAP_Y

    def corner(name: str) -> tuple[float, float]:
        column, row = place[name]
        return float(PAD + column * (NODE_W + GAP_X)), float(PAD + row * (NODE_H + GAP_Y))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" font-family="system-ui, -apple-system, Segoe UI, sans-serif">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6b7a90"/></marker></defs>',
    ]
    for a, b in graph.edges:
        ax, ay = corner(a)
        bx, by = corner(b)
        if place[a][0] < place[b][0]:
            x1, y1, x2, y2 = ax + NODE_W, ay + NODE_H / 2, bx - 2, by + NODE_H / 2
            bend = (x2 - x1) / 2
            path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        else:  # same column (a cache under its user): straight up
            x1, y1, x2, y2 = ax + NODE_W / 2, ay, bx + NODE_W / 2, by + NODE_H + 2
            path = f"M{x1},{y1} L{x2},{y2}"
        parts.append(f'<path d="{path}" fill="none" stroke="#6b7a90" stroke-width="1.6" marker-end="url(#arrow)"/>')
    for node in graph.nodes:
        x, y = corner(node.name)
        fill, stroke = COLOURS.get(node.result, COLOURS[""])
        dash = ' stroke-dasharray="5 3"' if node.result == "not run" or node.kind in ("iso", "wheels") else ""
        tip = node.name + (f": {node.result}" if node.result else "") + (f" ({node.detail})" if node.detail else "")
        parts.append(f'<g class="node {escape(node.kind)}"><title>{escape(tip)}</title>'
                     f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="9" fill="{fill}" '
                     f'stroke="{stroke}" stroke-width="{2.2 if node.result == "failed" else 1.4}"{dash}/>')
        parts.append(f'<text x="{x + NODE_W / 2}" y="{y + 24}" text-anchor="middle" font-size="14" '
                     f'font-weight="600" fill="#1d2733">{escape(_cut(node.label, 16))}</text>')
        second = node.detail or {"final": "final image", "verify": "boot test", "wheels": "wheelhouse",
                                 "iso": "ISO store"}.get(node.kind, node.kind)
        parts.append(f'<text x="{x + NODE_W / 2}" y="{y + 43}" text-anchor="middle" font-size="11.5" '
                     f'fill="#4d5b6b">{escape(_cut(second, 27))}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- DOT and Mermaid ---------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(graph: Graph, name: str = "stages") -> str:
    """Graphviz DOT text (``dot -Tpng``)."""
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="sans-serif"];']
    for node in graph.nodes:
        fill, stroke = COLOURS.get(node.result, COLOURS[""])
        label = node.label + (f"\\n{node.detail}" if node.detail else "")
        style = ', style="rounded,filled,dashed"' if node.kind in ("iso", "wheels") else ""
        lines.append(f"  {_quote(node.name)} [label={_quote(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}, "
                     f'fillcolor="{fill}", color="{stroke}"{style}];')
    lines += [f"  {_quote(a)} -> {_quote(b)};" for a, b in graph.edges]
    return "\n".join(lines) + "\n}\n"


def _mermaid_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid(graph: Graph) -> str:
    """Mermaid flowchart text (renders in GitHub and GitLab Markdown)."""
    lines = ["flowchart LR"]
    for node in graph.nodes:
        text = node.label + (f"<br/>{node.detail}" if node.detail else "")
        text = text.replace('"', "#quot;")
        shape = f'(["{text}"])' if node.kind in ("iso", "wheels") else f'["{text}"]'
        lines.append(f"  {_mermaid_id(node.name)}{shape}")
    lines += [f"  {_mermaid_id(a)} --> {_mermaid_id(b)}" for a, b in graph.edges]
    for result, (fill, stroke) in COLOURS.items():
        members = [_mermaid_id(n.name) for n in graph.nodes if n.result == result and result]
        if members:
            cls = result.replace(" ", "_")
            lines.append(f"  classDef {cls} fill:{fill},stroke:{stroke}")
            lines.append(f"  class {','.join(members)} {cls}")
    return "\n".join(lines) + "\n"
