"""Progress of transfers and programs: plain lines in logs and CI, redraws only on a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from vaultdoit import proc, progress
from vaultdoit.progress import Display, duration, size


def test_durations_and_sizes_read_well():
    assert duration(None) == "—"
    assert duration(0.25) == "0.25 s"
    assert duration(4.2) == "4.2 s"
    assert duration(187) == "3 min 07 s"
    assert duration(3725) == "1 h 02 min"
    assert size(512) == "512 B"
    assert size(3 * 2**20 + 2**19) == "3.5 MiB"
    assert size(5 * 2**30) == "5.0 GiB"


def test_a_meter_prints_a_line_per_tenth_and_one_at_the_end(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_current", Display(out))
    with progress.meter("download x.iso", total=1000) as meter:
        for done in range(0, 1001, 25):
            meter.update(done)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "  download x.iso: 0% (0 B of 1000 B)"
    assert [line.split(": ")[1].split("%")[0] for line in lines[1:-1]] == [str(n) for n in range(10, 100, 10)]
    assert lines[-1].startswith("  download x.iso: 100% (1000 B of 1000 B) in ")
    assert len(lines) == 11


def test_a_meter_of_unknown_size_counts_gibibytes(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_current", Display(out))
    with progress.meter("download y", total=None) as meter:
        for gib in range(4):
            meter.update(gib * 2**30 + 5)
    assert [line.split(": ")[1] for line in out.getvalue().splitlines()] == \
        ["0 B", "1.0 GiB", "2.0 GiB", "3.0 GiB", "3.0 GiB in " + out.getvalue().split(" in ")[-1].strip()]


def test_a_failed_transfer_has_no_final_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_current", Display(out))
    with pytest.raises(OSError):
        with progress.meter("download z", total=100) as meter:
            meter.update(50)
            raise OSError("connection reset")
    assert out.getvalue().splitlines() == ["  download z: 0% (0 B of 100 B)", "  download z: 50% (50 B of 100 B)"]


def test_qemu_img_progress_lines_feed_a_percent_meter(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_current", Display(out))
    with progress.meter("flatten into a.qcow2", unit="%") as meter:
        for text in ("    (0.00/100%)", "    (12.50/100%)", "noise", "    (57.00/100%)", "    (100.00/100%)"):
            meter.percent_line(text)
    assert [line.strip() for line in out.getvalue().splitlines()][:3] == [
        "flatten into a.qcow2: 0%", "flatten into a.qcow2: 12%", "flatten into a.qcow2: 57%"]
    assert out.getvalue().splitlines()[-1].startswith("  flatten into a.qcow2: 100% in ")


# Like qemu-img -p: a display redrawn with \r, then a line end.
REDRAWING = ["sh", "-c", "printf 'starting\\n'; for p in 0.00 33.30 66.60 100.00; do "
             "printf '    (%s/100%%)\\r' $p; sleep 0.01; done; printf '\\ndone\\n'"]


def test_redraws_stay_out_of_the_log_and_go_to_the_progress_callback(tmp_path: Path, capfd):
    seen: list[str] = []
    log = tmp_path / "convert.log"
    proc.run(REDRAWING, logfile=log, echo=True, progress=seen.append)
    text = log.read_text()
    assert "\r" not in text
    # The log keeps the final state of the display as one line, and every other line.
    assert text.splitlines()[1:] == ["starting", "(100.00/100%)", "done"]
    assert [s.strip() for s in seen] == ["(0.00/100%)", "(33.30/100%)", "(66.60/100%)", "(100.00/100%)"]
    err = capfd.readouterr().err
    assert "\r" not in err and "starting\n" in err and "done\n" in err and "(33.30/100%)" not in err


def test_without_a_callback_a_non_terminal_gets_only_the_final_state(tmp_path: Path, capfd, monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    proc.run(REDRAWING, logfile=tmp_path / "x.log", echo=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["starting", "(100.00/100%)", "done"]


def test_terminal_detection_respects_the_override_and_dumb_terminals(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert progress.is_terminal(Tty()) and not progress.is_terminal(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.is_terminal(Tty())
    monkeypatch.setenv(progress.PROGRESS_ENV, "live")
    assert progress.is_terminal(io.StringIO())
    monkeypatch.setenv(progress.PROGRESS_ENV, "plain")
    monkeypatch.setenv("TERM", "xterm")
    assert not progress.is_terminal(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert progress.no_color()
    monkeypatch.setenv("NO_COLOR", "")
    assert not progress.no_color()
