"""JUnit XML for CI systems that show test results: the boot test's checks, a run's tasks.

The shape is the common one CI systems read (Jenkins, GitLab, GitHub
actions that publish test reports): ``<testsuites>`` holding one
``<testsuite>`` with ``name``, ``tests``, ``failures``, ``errors``,
``skipped``, ``time`` and ``timestamp``, whose ``<testcase>`` elements have
``classname``, ``name`` and ``time`` and at most one ``<failure>``,
``<error>`` or ``<skipped>`` child with a ``message`` attribute.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

MESSAGE_LIMIT = 500  # characters of a message attribute; the full text is the element's body


@dataclass(frozen=True)
class Case:
    """One test case: ``outcome`` is passed, failure, error or skipped."""

    name: str
    classname: str
    seconds: float = 0.0
    outcome: str = "passed"
    message: str = ""
    output: str = ""


def _attr(text: str) -> str:
    """One line for an attribute (XML attributes keep no line breaks readers agree on)."""
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[:MESSAGE_LIMIT - 1] + "…"


def _clean(text: str) -> str:
    """``text`` without the control characters XML 1.0 cannot hold (a console may print them)."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 32)


def document(suite: str, cases: Sequence[Case], *, started: float | None = None, output: str = "") -> str:
    """The JUnit XML text of one suite of ``cases``."""
    counts = {kind: sum(c.outcome == kind for c in cases) for kind in ("failure", "error", "skipped")}
    total = round(sum(c.seconds for c in cases), 3)
    root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(counts["failure"]),
                      errors=str(counts["error"]), skipped=str(counts["skipped"]), time=f"{total:.3f}")
    element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                            failures=str(counts["failure"]), errors=str(counts["error"]),
                            skipped=str(counts["skipped"]), time=f"{total:.3f}",
                            timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started or time.time())),
                            hostname=socket.gethostname())
    for case in cases:
        node = ET.SubElement(element, "testcase", classname=case.classname, name=case.name,
                             time=f"{case.seconds:.3f}")
        if case.outcome != "passed":
            child = ET.SubElement(node, case.outcome, message=_clean(_attr(case.message or case.outcome)))
            if case.outcome != "skipped":
                child.set("type", case.outcome)
                child.text = _clean(case.message)
        if case.output:
            ET.SubElement(node, "system-out").text = _clean(case.output)
    if output:
        ET.SubElement(element, "system-out").text = _clean(output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
