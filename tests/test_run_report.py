"""What a run shows and leaves behind: [n/N] lines, the live display on a terminal, the summary
table, and the HTML report with its record and JUnit file. Fake packer, real doit and qemu-img."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import VENV_BIN, fake_packer_env, run_doit

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def built(project_copy, tmp_path: Path):
    """The team project built once with the fake packer (plain output): (root, env)."""
    root = project_copy("team")
    env = {**fake_packer_env(root, tmp_path / "fake"), "VAULTDOIT_PROGRESS": ""}
    run_doit(root, "final_image", env=env)
    return root, env


def runs(root: Path) -> list[Path]:
    return sorted((root / "build/reports/runs").glob("2*.json"))


def test_plain_lines_count_tasks_and_end_with_the_summary(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = fake_packer_env(root, tmp_path / "fake")
    first = run_doit(root, "final_image", env=env)
    out = first.stdout
    assert "\x1b[" not in out + first.stderr  # not a terminal: no colours, no redraws
    for n, name in enumerate(("stage:base", "stage:mid", "stage:top", "final_image"), 1):
        assert f"[{n}/4] {name}\n" in out
        assert re.search(rf"\[{n}/4\] {re.escape(name)}: done in \d", out)
    table = out[out.index("task "):]
    assert table.splitlines()[0].split() == ["task", "result", "time", "last", "build", "size", "cache", "hits"]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line[:1].isalpha() and " ran " in line}
    assert set(rows) == {"stage:base", "stage:mid", "stage:top", "final_image"}
    assert "KiB" in rows["stage:top"]  # the image's size
    assert "4 ran in " in out and "report: build/reports/runs/" in out
    # The flatten's progress, as plain lines.
    assert "flatten into team.qcow2: 100% in " in out

    with open(root / "ansible/top.yml", "a") as fh:
        fh.write("# changed\n")
    second = run_doit(root, "final_image", env=env).stdout
    assert "-- [1/4] stage:base: up to date" in second and "-- [2/4] stage:mid: up to date" in second
    # What the last build took is shown as the expectation: the stage's own record, the final image's last run.
    assert re.search(r"\[3/4\] stage:top \(last build \d", second)
    assert re.search(r"\[4/4\] final_image \(last build \d", second)
    assert "2 ran, 2 up to date in" in second

    third = run_doit(root, "final_image", env=env).stdout
    assert "4 up to date in" in third and "nothing ran; last report: build/reports/runs/latest.html" in third
    assert len(runs(root)) == 2  # a run in which nothing ran writes no report


def _pty_run(root: Path, env: dict[str, str], *args: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run doit with stdout and stderr on a pseudo-terminal, as in a person's shell."""
    primary, secondary = pty.openpty()
    os.set_blocking(primary, False)
    child = subprocess.Popen([str(VENV_BIN / "doit"), *args], cwd=root, stdin=subprocess.DEVNULL,
                             stdout=secondary, stderr=secondary, env={**os.environ, **env, "TERM": "xterm",
                                                                      "COLUMNS": "120"})
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif child.poll() is not None:
            break
    os.close(primary)
    return child.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_the_live_display_and_colours(project_copy, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = project_copy("team")
    env = {**fake_packer_env(root, tmp_path / "fake"), "VAULTDOIT_PROGRESS": ""}
    code, out = _pty_run(root, env, "final_image")
    assert code == 0, out
    assert "\x1b[2K" in out  # the live region is redrawn in place
    assert "━" in out  # its bars
    assert "\x1b[32m" in out  # green for what ran
    plain = ANSI.sub("", out)
    assert "[2/4] stage:mid" in plain and "flatten into team.qcow2: 100% in " in plain
    assert "4 ran in " in plain and "report: build/reports/runs/" in plain


def test_no_color_keeps_the_live_display_without_colours(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = {**fake_packer_env(root, tmp_path / "fake"), "NO_COLOR": "1", "VAULTDOIT_PROGRESS": ""}
    code, out = _pty_run(root, env, "final_image")
    assert code == 0, out
    assert "\x1b[2K" in out and "━" in out
    # Bold and dim stay (they are not colours); no foreground or background colour is set.
    codes = [int(n) for c in re.findall(r"\x1b\[([0-9;]*)m", out) for n in c.split(";") if n]
    assert not [n for n in codes if 30 <= n <= 49 or 90 <= n <= 107], set(codes)
    assert "4 ran in " in ANSI.sub("", out)


class _Page(HTMLParser):
    """The parts of the report a test looks at."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, re.S)]


def test_report_of_a_run_with_a_failure_an_up_to_date_and_a_rebuilt_task(built):
    root, env = built
    # mid's input changes (mid and top run), top's build fails, base stays up to date.
    with open(root / "ansible/mid.yml", "a") as fh:
        fh.write("# changed\n")
    failed = run_doit(root, "final_image", env={**env, "FAKE_PACKER_FAIL": "top"}, check=False)
    assert failed.returncode == 1
    record = json.loads(runs(root)[-1].read_text())
    results = {t["name"]: t["result"] for t in record["tasks"]}
    assert results == {"stage:base": "up to date", "stage:mid": "ran", "stage:top": "failed",
                       "final_image": "not run"}
    assert record["result"] == "failed" and "packer build" in record["tasks"][2]["message"]

    here = root / "build/reports/runs"
    html = (here / "latest.html").read_text()
    assert html == runs(root)[-1].with_suffix(".html").read_text()
    page = _Page()
    page.feed(html)
    # Self-contained: no script, no stylesheet or image from elsewhere, nothing fetched.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert {"failures", "timeline", "graph", "images", "boot", "tasks"} <= set(page.ids)
    text = " ".join(page.text)
    assert "FAILED" in text and "command failed with exit code 1: packer build" in text

    timeline, stage_graph = _svgs(html)[:2]
    ns = "{http://www.w3.org/2000/svg}"
    bars = {r.findtext(f"{ns}title", "").rsplit(": ", 1)[0]: r.get("fill") for r in timeline.iter(f"{ns}rect")
            if r.get("fill") not in (None, "none")}
    assert bars == {"stage:mid": "#43a047", "stage:top": "#e53935"}  # ran green, failed red
    marks = [p.findtext(f"{ns}title") for p in timeline.iter(f"{ns}path")]
    assert "stage:base: up to date" in marks
    labels = [t.text for t in timeline.iter(f"{ns}text")]
    assert {"stage:base", "stage:mid", "stage:top", "final_image"} <= set(labels)

    nodes = {g.findtext(f"{ns}title", "").rsplit(": ", 1)[0] for g in stage_graph.iter(f"{ns}g")}
    assert {"stage:base", "stage:mid", "stage:top"} <= nodes
    titles = " | ".join(g.findtext(f"{ns}title", "") for g in stage_graph.iter(f"{ns}g"))
    assert "stage:top: failed" in titles and "stage:mid: ran" in titles and "stage:base: up to date" in titles
    edges = [p for p in stage_graph.iter(f"{ns}path") if p.get("marker-end")]
    assert len(edges) == 3  # base -> mid -> top -> final_image

    # Links to the logs and images resolve from the report's folder.
    local = [link for link in page.links if not link.startswith("#")]
    assert any(link.endswith("stage-top.log") for link in local)
    assert any(link.endswith("mid.qcow2") for link in local)
    for link in local:
        assert (here / link).exists(), link

    tasks = ET.parse(here / "latest.junit.xml").getroot()
    suite = tasks.find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "1"
    assert suite.get("skipped") == "1"


def test_a_run_in_which_nothing_runs_imports_nothing_for_the_report(built):
    root, env = built
    before = runs(root)
    result = subprocess.run([sys.executable, "-X", "importtime", str(VENV_BIN / "doit"), "final_image"], cwd=root,
                            env={**os.environ, **env}, capture_output=True, text=True, check=True)
    assert "nothing ran" in result.stdout
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "vaultdoit.reporter" in modules  # the reporter ran ...
    heavy = {"rich", "vaultdoit.report", "vaultdoit.graph", "vaultdoit.live", "xml.etree.ElementTree",
             "vaultdoit.junit"}
    assert not heavy & modules  # ... without what only a report or a terminal needs
    assert runs(root) == before


def test_an_interrupted_run_is_reported_as_such(project_copy, tmp_path: Path):
    root = project_copy("team")
    env = {**os.environ, **fake_packer_env(root, tmp_path / "fake"), "FAKE_PACKER_STALL": "mid"}
    child = subprocess.Popen([str(VENV_BIN / "doit"), "final_image"], cwd=root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = root / "build/logs/stage-mid.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "Waiting for SSH" in log.read_text()):
        assert time.monotonic() < deadline and child.poll() is None, "stage:mid never started"
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 130, out
    assert "1 ran, 1 interrupted, 2 not run in " in out
    record = json.loads(runs(root)[-1].read_text())
    assert record["result"] == "interrupted"
    assert {t["name"]: t["result"] for t in record["tasks"]}["stage:mid"] == "interrupted"
    assert "INTERRUPTED" in (root / "build/reports/runs/latest.html").read_text()
    suite = ET.parse(root / "build/reports/runs/latest.junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"


def test_each_final_image_has_its_size_card(tmp_path: Path):
    """Several images (variants): a size card for each, named; one image: one card, unnamed."""
    from vaultdoit import report

    def final(name: str, variant: str | None, size: int) -> dict:
        return {"name": name, "result": "ran", "elapsed": 1.0, "facts": {"bytes": size},
                "meta": {"kind": "final", "variant": variant}}

    record = {"root": str(tmp_path), "id": "1", "title": "t", "command": "doit", "started": 0.0,
              "finished": 2.0, "result": "ok", "tasks": [final("final_image:demo", "demo", 3 * 2**20),
                                                          final("final_image:production", "production", 5 * 2**20)]}
    text = report.html(record, tmp_path)
    assert "<span>final image demo</span>" in text and "<span>final image production</span>" in text
    assert "3.0 MiB" in text and "5.0 MiB" in text
    record["tasks"] = [final("final_image", None, 2**20)]
    assert "<span>final image</span>" in report.html(record, tmp_path)
