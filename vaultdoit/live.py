"""The live display of a run on a terminal (rich): what runs now, for how long, against last time.

Imported only when a task starts with a terminal on stdout and stderr (see
reporter.py). Task output (Packer's log lines) scrolls above the display;
the display shows one line per running task (elapsed / expected time) and
one per transfer (download, ``qemu-img convert``) with a real bar.
"""

from __future__ import annotations

import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TaskID, TextColumn
from rich.progress_bar import ProgressBar
from rich.text import Text

from vaultdoit.progress import Display, Meter, duration

STYLES = {"bold": "bold", "green": "green", "red": "bold red", "dim": "dim"}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class _Bar(BarColumn):
    """A task's bar runs against the time its last build took; a meter's is its own."""

    def render(self, task: Any) -> ProgressBar:
        expected = task.fields.get("expected")
        if task.fields.get("kind") == "task":
            if not expected:
                return ProgressBar(total=None, width=self.bar_width, pulse=True, animation_time=task.get_time())
            done = min(task.elapsed or 0.0, expected * 0.99)  # never full before it is done
            return ProgressBar(total=expected, completed=done, width=self.bar_width,
                               style=self.style, complete_style=self.complete_style)
        return super().render(task)


class _Times(ProgressColumn):
    """``2:31 / ~4:10`` for a task; ``57%`` or ``1.2 GiB of 3.0 GiB`` and the elapsed time for a meter."""

    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0.0
        if task.fields.get("kind") == "task":
            expected = task.fields.get("expected")
            text = _clock(elapsed) + (f" / ~{_clock(expected)}" if expected else "")
            late = bool(expected) and elapsed > 1.5 * expected
            return Text(text, style="yellow" if late else "cyan")
        meter: Meter | None = task.fields.get("meter")
        return Text(f"{meter.shown() if meter else ''}  {_clock(elapsed)}", style="cyan")


class LiveDisplay(Display):
    """A rich Progress above which every line (ours and the tasks') is printed."""

    live = True

    def __init__(self, stream: IO[str], colour: bool = True) -> None:
        super().__init__(stream, colour)
        # soft_wrap: long lines (paths) stay whole for copy and paste; the terminal wraps them.
        self.console = Console(file=stream, no_color=not colour, highlight=False, soft_wrap=True)
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), _Bar(bar_width=30), _Times(),
                             console=self.console, redirect_stdout=True, redirect_stderr=True,
                             transient=True, refresh_per_second=4)
        self.ids: dict[Any, TaskID] = {}

    def start(self) -> None:
        self.bars.start()

    def stop(self) -> None:
        self.bars.stop()

    def line(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(text, style=STYLES.get(style or "", "")))

    def task_start(self, name: str, label: str, expected: float | None) -> None:
        self.ids[name] = self.bars.add_task(label, total=None, kind="task", expected=expected)

    def task_end(self, name: str) -> None:
        found = self.ids.pop(name, None)
        if found is not None:
            self.bars.remove_task(found)

    def meter_start(self, meter: Meter) -> None:
        total = 100.0 if meter.unit == "%" else meter.total
        self.ids[id(meter)] = self.bars.add_task(f"  {meter.label}", total=total, kind="meter", meter=meter)

    def meter_update(self, meter: Meter) -> None:
        found = self.ids.get(id(meter))
        if found is not None:
            total = 100.0 if meter.unit == "%" else meter.total
            self.bars.update(found, completed=meter.done, total=total)

    def meter_end(self, meter: Meter, ok: bool) -> None:
        found = self.ids.pop(id(meter), None)
        if found is not None:
            self.bars.remove_task(found)
        if ok:
            self.line(f"  {meter.label}: {meter.shown()} in {duration(time.monotonic() - meter.started)}")
