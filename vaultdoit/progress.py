"""How a run shows progress: a live display on a terminal, plain lines in CI and logs.

One display is current per process. The doit reporter (reporter.py) makes
the live one when a task starts on a terminal; actions report long transfers
through ``meter()`` (downloads, ``qemu-img convert``) without knowing where
they are shown. Elsewhere (a log, a CI job, ``--reporter=json``) a meter
prints a plain line at every tenth of the way, never a carriage return.

rich is imported only for the live display, so a run in which nothing
happens (or nothing is on a terminal) never pays for it.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

PROGRESS_ENV = "VAULTDOIT_PROGRESS"  # "plain" turns the live display off; "live" forces it
PERCENT = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")  # qemu-img -p: "    (42.17/100%)"


def note(message: str) -> None:
    """One line of an action's progress on stderr (doit shows a running task's stderr)."""
    sys.stderr.write(f"vaultdoit: {message}\n")
    sys.stderr.flush()


def no_color() -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colour off."""
    return bool(os.environ.get("NO_COLOR"))


def is_terminal(stream: IO[str] | Any) -> bool:
    """A person is watching ``stream``: live redraws are welcome there."""
    setting = os.environ.get(PROGRESS_ENV, "")
    if setting in ("plain", "live"):
        return setting == "live"
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def duration(seconds: float | None) -> str:
    """``0.25 s``, ``4.2 s``, ``3 min 07 s``, ``1 h 02 min``; ``—`` for nothing."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(n: float | None) -> str:
    """Bytes as ``12.3 MiB``."""
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns first


class Meter:
    """Progress of one transfer: ``update(done)`` as it goes, out of ``total`` (None: unknown)."""

    def __init__(self, label: str, total: float | None, unit: str, display: Display) -> None:
        self.label = label
        self.total = total
        self.unit = unit  # "bytes" or "%"
        self.done = 0.0
        self.started = time.monotonic()
        self.display = display
        self.handle: Any = None

    def update(self, done: float, total: float | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        self.display.meter_update(self)

    def percent_line(self, text: str) -> None:
        """Feed a program's progress line (``qemu-img -p``); other text is ignored."""
        found = PERCENT.search(text)
        if found:
            self.update(float(found.group(1)))

    def fraction(self) -> float | None:
        """How far it got (0..1), None when the total is unknown."""
        if self.unit == "%":
            return min(max(self.done / 100, 0.0), 1.0)
        if self.total:
            return min(max(self.done / self.total, 0.0), 1.0)
        return None

    def shown(self) -> str:
        """``40% (1.2 GiB of 3.0 GiB)``, ``57%`` or ``812.0 MiB``."""
        if self.unit == "%":
            return f"{self.done:.0f}%"
        if self.total:
            return f"{100 * self.done / self.total:.0f}% ({size(self.done)} of {size(self.total)})"
        return size(self.done)


ANSI = {"bold": "\033[1m", "green": "\033[32m", "red": "\033[1;31m", "dim": "\033[2m"}
RESET = "\033[0m"


class Display:
    """Plain lines on a stream: a meter every tenth of the way, a line when it ends.

    ``colour``: ANSI colours for the styles of ``line`` (a terminal without NO_COLOR).
    The task hooks are for the live display; here the lines say it all.
    """

    live = False

    def __init__(self, stream: IO[str] | None = None, colour: bool = False) -> None:
        self._stream = stream
        self.colour = colour
        self._lock = threading.Lock()
        self._steps: dict[int, int] = {}

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr  # doit swaps sys.stderr while a task runs

    def line(self, text: str, style: str | None = None) -> None:
        if style and self.colour:
            text = f"{ANSI[style]}{text}{RESET}"
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self) -> None:
        """Take over the terminal (the live display)."""

    def stop(self) -> None:
        """Give the terminal back."""

    def task_start(self, name: str, label: str, expected: float | None) -> None:
        """A task began (``label``: ``[3/7] stage:drivers``)."""

    def task_end(self, name: str) -> None:
        """A task ended."""

    def meter_start(self, meter: Meter) -> None:
        self._steps[id(meter)] = -1
        self.meter_update(meter)

    def meter_update(self, meter: Meter) -> None:
        fraction = meter.fraction()
        # Tenths of the way; a transfer of unknown size says how far it got every GiB.
        step = int(fraction * 10) if fraction is not None else int(meter.done // (1 << 30))
        if step > self._steps.get(id(meter), -1):
            self._steps[id(meter)] = step
            if fraction is None or step < 10:  # the end is said by meter_end, with the time it took
                self.line(f"  {meter.label}: {meter.shown()}")

    def meter_end(self, meter: Meter, ok: bool) -> None:
        self._steps.pop(id(meter), None)
        if ok:
            self.line(f"  {meter.label}: {meter.shown()} in {duration(time.monotonic() - meter.started)}")


_current: Display | None = None


def current() -> Display:
    """The display in use: the reporter's while doit runs tasks, plain lines otherwise."""
    return _current or Display()


def install(display: Display | None) -> None:
    """Make ``display`` current (None: back to plain lines)."""
    global _current
    _current = display


def live_active() -> bool:
    """True while a live display owns the terminal (raw writes would garble it)."""
    return _current is not None and _current.live


@contextmanager
def meter(label: str, total: float | None = None, unit: str = "bytes") -> Iterator[Meter]:
    """Show the progress of one transfer for the time of the block."""
    display = current()
    item = Meter(label, total, unit, display)
    display.meter_start(item)
    ok = False
    try:
        yield item
        ok = True
    finally:
        display.meter_end(item, ok)


def redraws(stream: IO[str] | Any) -> bool:
    """Whether a program's ``\\r`` redraws may be copied to ``stream`` as they are."""
    return not live_active() and is_terminal(stream)
