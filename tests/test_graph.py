"""The stage graph as SVG, DOT and Mermaid, and the `vaultdoit graph` and `vaultdoit report` commands."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from conftest import REPO
from vaultdoit import graph
from vaultdoit.cli import cli
from vaultdoit.plan import load_project
from vaultdoit.tasks import gen_all

SVG = "{http://www.w3.org/2000/svg}"


def mini() -> graph.Graph:
    # The group tasks (final_image, verify over every image) have no meta: not in the graph.
    tasks = [(t["basename"], t["meta"]["vaultdoit"]) for t in gen_all(load_project(REPO, "mini")) if "meta" in t]
    return graph.from_tasks(tasks, results={"stage:drivers": "ran", "stage:final:demo": "failed"},
                            details={"stage:base": "352.0 MiB"})


def test_the_mini_graph_has_its_stages_caches_and_final_images():
    g = mini()
    assert [n.name for n in g.nodes] == ["cache:wheels", "stage:base", "stage:drivers", "stage:frameworks",
                                         "stage:final:demo", "stage:final:production", "final_image:demo",
                                         "final_image:production", "verify:demo", "verify:production"]
    # One chain of shared stages, then one branch per variant: each boot test after its own image.
    assert set(g.edges) == {("stage:base", "stage:drivers"), ("stage:drivers", "stage:frameworks"),
                            ("cache:wheels", "stage:frameworks"),
                            *(("stage:frameworks", f"stage:final:{v}") for v in ("demo", "production")),
                            *((f"stage:final:{v}", f"final_image:{v}") for v in ("demo", "production")),
                            *((f"final_image:{v}", f"verify:{v}") for v in ("demo", "production"))}
    place = graph.layout(g)
    assert [place[f"stage:{s}"] for s in ("base", "drivers", "frameworks", "final:demo")] == [(0, 0), (1, 0), (2, 0),
                                                                                             (3, 0)]
    assert place["stage:final:production"] == (3, 1)
    assert place["final_image:demo"] == (4, 0) and place["verify:demo"] == (5, 0)
    # The wheelhouse sits below, one column before the stage that installs from it.
    assert place["cache:wheels"] == (1, 1)


def test_svg_draws_a_box_per_node_and_an_arrow_per_edge():
    g = mini()
    root = ET.fromstring(graph.svg(g, "mini"))
    assert root.tag == f"{SVG}svg" and root.findtext(f"{SVG}title") == "mini"
    boxes = [e for e in root.iter(f"{SVG}g")]
    assert len(boxes) == len(g.nodes)
    titles = [b.findtext(f"{SVG}title") for b in boxes]
    assert "stage:drivers: ran" in titles and "stage:final:demo: failed" in titles
    assert "stage:base (352.0 MiB)" in titles
    arrows = [p for p in root.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(arrows) == len(g.edges)
    failed = next(b for b in boxes if b.findtext(f"{SVG}title") == "stage:final:demo: failed").find(f"{SVG}rect")
    assert failed is not None and failed.get("stroke") == graph.COLOURS["failed"][1]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "frameworks" in texts and "352.0 MiB" in texts


def test_dot_and_mermaid_name_every_node_and_edge():
    g = mini()
    dot = graph.dot(g)
    assert dot.startswith('digraph "stages" {') and "rankdir=LR;" in dot
    assert '"stage:base" [label="base\\n352.0 MiB"' in dot
    assert len(re.findall(r" -> ", dot)) == len(g.edges) and '"stage:final:demo" -> "final_image:demo";' in dot
    mermaid = graph.mermaid(g)
    assert mermaid.startswith("flowchart LR\n")
    assert "  stage_base[\"base<br/>352.0 MiB\"]" in mermaid and "  cache_wheels([\"cache:wheels\"])" in mermaid
    assert "  stage_frameworks --> stage_final_demo" in mermaid and '  stage_final_demo["final:demo"]' in mermaid
    assert "class stage_final_demo failed" in mermaid and "classDef ran fill:" in mermaid


def test_graph_command_writes_the_three_forms(project_copy, tmp_path: Path):
    root = project_copy("team")
    result = CliRunner().invoke(cli, ["-C", str(root), "graph"])
    assert result.exit_code == 0, result.output
    written = [Path(line) for line in result.output.split()]
    assert [p.name for p in written] == ["graph.svg", "graph.dot", "graph.mmd"]
    assert all(p.parent == root / "build/reports" for p in written)
    ET.fromstring(written[0].read_text())  # well-formed
    assert "not built" in written[1].read_text()
    one = CliRunner().invoke(cli, ["-C", str(root), "graph", "--format", "mermaid", "-o", "-"])
    assert one.exit_code == 0 and one.output.startswith("flowchart LR")
    into = CliRunner().invoke(cli, ["-C", str(root), "graph", "--format", "dot", "-o", str(tmp_path / "g.dot")])
    assert into.exit_code == 0 and (tmp_path / "g.dot").read_text().startswith("digraph")
    bad = CliRunner().invoke(cli, ["-C", str(root), "graph", "-o", "-"])
    assert bad.exit_code == 2 and "prints one format" in bad.output


def test_report_command_before_and_after_a_run(project_copy):
    root = project_copy("team")
    none = CliRunner().invoke(cli, ["-C", str(root), "report"])
    assert none.exit_code == 2 and "no build report yet" in none.output
    runs = root / "build/reports/runs"
    runs.mkdir(parents=True)
    (runs / "latest.html").write_text("<html></html>")
    found = CliRunner().invoke(cli, ["-C", str(root), "report"])
    assert found.exit_code == 0 and found.output.strip() == str(runs / "latest.html")
    junit = CliRunner().invoke(cli, ["-C", str(root), "report", "--junit"])
    assert junit.output.strip() == str(runs / "latest.junit.xml")


def test_an_empty_graph_is_still_a_picture():
    root = ET.fromstring(graph.svg(graph.Graph()))
    assert "no stages" in "".join(root.itertext())
    assert graph.from_tasks([("keys", {"kind": "keys"})]).nodes == []
