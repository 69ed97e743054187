"""doit's reporter for vaultdoit runs: ``[n/N]`` lines with expected times, a live display on a
terminal, a summary table at the end, and the run's record, HTML report and JUnit file.

``DOIT_CONFIG["reporter"]`` is a subclass made by ``make()`` that knows the
project's folders. Nothing heavy is imported until a task runs: a run in
which everything is up to date prints its lines and the table and writes no
report (the last report still describes the images, and the no-op stays fast).
``doit --reporter=json`` and the other doit reporters still work; they write
no report.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from vaultdoit import progress, runs
from vaultdoit.progress import duration, size
from vaultdoit.runs import TaskRun

if TYPE_CHECKING:
    from vaultdoit.project import Project

from vaultdoit.progress import ANSI, RESET


class Context:
    """What the reporter needs to know of the project (plain data, made at load time)."""

    def __init__(self, root: Path, report_dir: Path, title: str, accel_file: Path | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.root = root
        self.report_dir = report_dir
        self.title = title  # e.g. "vault-mini (profile mini)"
        self.accel_file = accel_file  # the accelerator probe's verdict
        self.secrets = secrets  # values a report never shows (a sensitive `var.NAME=` on the command line)


def make(context: Context) -> type[Reporter]:
    """The reporter class for one project (doit instantiates it)."""
    return type("VaultdoitReporter", (Reporter,), {"context": context})


def doit_config(project: Project) -> dict[str, Any]:
    """What dodo.setup() adds to DOIT_CONFIG: this reporter, and `doit list` in build order."""
    from vaultdoit.tasks.common import reports

    cfg = project.config
    title = cfg.image_name + (f" (profile {cfg.profile})" if cfg.profile else "")
    from vaultdoit import sensitive

    context = Context(root=cfg.root, report_dir=reports(project), title=title,
                      accel_file=cfg.cache_dir / "probe" / "accel.json",
                      secrets=tuple(sensitive.values(project.packer)))
    return {"reporter": make(context), "sort": "definition"}


class Reporter:
    """The reporter (see the module's docstring); doit calls its methods from one thread."""

    desc = "vaultdoit: progress, summary table, HTML report"
    context: ClassVar[Context | None] = None

    def __init__(self, outstream: IO[str], options: dict[str, Any]) -> None:
        self.out = outstream
        self.failure_verbosity = options.get("failure_verbosity", 0)
        self.started = time.time()
        self.items: dict[str, TaskRun] = {}
        self.order: list[str] = []  # the tasks this run may touch, in definition order
        self.reached = 0
        self.ran_any = False
        self.errors: list[str] = []
        self.expected: dict[str, float] | None = None
        self.colour = progress.is_terminal(outstream) and not progress.no_color()
        self.display = progress.Display(outstream, self.colour)
        self.lock = threading.Lock()

    # --- doit's reporter interface -----------------------------------------------------------------

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        """The tasks this run may touch: the selected ones and what they depend on."""
        wanted: set[str] = set()
        todo = list(selected_tasks)
        while todo:
            name = todo.pop()
            if name in wanted or name not in tasks:
                continue
            wanted.add(name)
            task = tasks[name]
            todo.extend(task.task_dep + task.setup_tasks)
        for name, task in tasks.items():
            if name in wanted and task.actions and not name.startswith("_"):
                meta = (task.meta or {}).get("vaultdoit", {})
                self.items[name] = TaskRun(name=name, doc=task.doc or "", meta=dict(meta))
                self.order.append(name)

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        item = self._reach(task)
        if item is None:
            return
        if not self.ran_any:
            self.ran_any = True
            self._start_display()
        item.started = time.time()
        item.expected = self._expected(item)
        self.display.line(f"{self._tag(item)} {item.name}{self._expectation(item)}", "bold")
        self.display.task_start(item.name, f"{self._tag(item)} {item.name}", item.expected)

    def add_success(self, task: Any) -> None:
        item = self.items.get(task.name)
        if item is None:
            return
        self._finish(item, "ran")
        self.display.line(f"{self._tag(item)} {item.name}: done in {duration(item.elapsed)}", "green")

    def add_failure(self, task: Any, fail: Any) -> None:
        item = self.items.get(task.name) or self._reach(task)
        if item is None:
            return
        unmet = type(fail).__name__ == "UnmetDependency"
        self._finish(item, "not run" if unmet else "failed")
        item.message = fail.get_msg().strip() if hasattr(fail, "get_msg") else str(fail)
        if unmet:
            self.display.line(f"{self._tag(item)} {item.name}: not run ({item.message})")
            return
        self.display.line(f"{self._tag(item)} {item.name}: FAILED"
                          + (f" after {duration(item.elapsed)}" if item.started else ""), "red")
        if getattr(fail, "report", True) and item.message:
            self.display.line(item.message)

    def skip_uptodate(self, task: Any) -> None:
        item = self._reach(task)
        if item is not None:
            item.result = "up to date"
            item.started = time.time()  # when it was found up to date (the report's timeline)
            self.display.line(f"-- {self._tag(item)} {item.name}: up to date", "dim")

    def skip_ignore(self, task: Any) -> None:
        item = self._reach(task)
        if item is not None:
            item.result = "ignored"
            self.display.line(f"!! {self._tag(item)} {item.name}: ignored")

    def teardown_task(self, task: Any) -> None:
        pass

    def cleanup_error(self, exception: Any) -> None:
        self.errors.append(exception.get_msg())

    def runtime_error(self, msg: str) -> None:
        self.errors.append(msg)

    def complete_run(self) -> None:
        self._stop_display()
        for item in self.items.values():
            if item.started is not None and item.result == "not run":  # Ctrl-C while it ran
                item.result, item.elapsed = "interrupted", time.time() - item.started
        if self.errors:
            self.out.write("#" * 40 + "\nExecution aborted.\n" + "\n".join(self.errors) + "\n")
        finished = time.time()
        root = self.context.root if self.context else Path.cwd()
        for item in self.items.values():
            # An interrupted task may still be putting its previous output back: its files say nothing yet.
            item.facts = runs.facts(root, item.meta) if item.result != "interrupted" else {}
        self.out.write(summary(list(self.items.values()), finished - self.started, colour=self.colour))
        report = self._save(finished) if self.ran_any or self.failed() else None
        if report is not None:
            self.out.write(f"report: {_shown(report, root)}\n")
        elif self.context is not None and (last := runs.latest(self.context.report_dir)) is not None:
            self.out.write(f"nothing ran; last report: {_shown(last, root)}\n")
        self.out.flush()

    # --- helpers ---------------------------------------------------------------------------------

    def failed(self) -> bool:
        return bool(self.errors) or any(i.result in ("failed", "interrupted") for i in self.items.values())

    def _reach(self, task: Any) -> TaskRun | None:
        item = self.items.get(task.name)
        if item is not None and not item.number:
            self.reached += 1
            item.number = self.reached
        return item

    def _tag(self, item: TaskRun) -> str:
        return f"[{item.number}/{len(self.order)}]"

    def _finish(self, item: TaskRun, result: str) -> None:
        item.result = result
        if item.started is not None:
            item.elapsed = time.time() - item.started
        self.display.task_end(item.name)

    def _expected(self, item: TaskRun) -> float | None:
        """How long the task took last time: a stage from its image's record, others from past runs."""
        if self.context is None:
            return None
        if item.meta.get("kind") == "stage":
            seconds = runs.stage_record(self.context.root, item.meta.get("image")).get("build_seconds")
            if isinstance(seconds, (int, float)):
                return float(seconds)
        if self.expected is None:  # read once, and only when a task runs
            self.expected = runs.expected_times(self.context.report_dir, self.order)
        return self.expected.get(item.name)

    def _expectation(self, item: TaskRun) -> str:
        return f" (last build {duration(item.expected)})" if item.expected else ""

    def _start_display(self) -> None:
        if progress.is_terminal(self.out) and progress.is_terminal(sys.stderr):
            from vaultdoit.live import LiveDisplay

            self.display = LiveDisplay(self.out, colour=not progress.no_color())
        self.display.start()
        progress.install(self.display)

    def _stop_display(self) -> None:
        self.display.stop()
        progress.install(None)
        self.display = progress.Display(self.out, self.colour)

    def _save(self, finished: float) -> Path | None:
        """Write the run's record, HTML report and JUnit file (never fails the run)."""
        if self.context is None:
            return None
        import shlex

        from vaultdoit import report, sensitive

        record = {
            "format": runs.FORMAT, "id": runs.new_id(self.started), "title": self.context.title,
            "command": shlex.join(sensitive.hide(a, self.context.secrets) for a in [Path(sys.argv[0]).name,
                                                                                   *sys.argv[1:]]),
            "root": str(self.context.root),
            "started": self.started, "finished": finished,
            "result": "interrupted" if any(i.result == "interrupted" for i in self.items.values())
            else "failed" if self.failed() else "ok",
            "errors": [sensitive.hide(e, self.context.secrets) for e in self.errors], "tasks": [runs.to_dict(self.items[n]) for n in self.order],
            "accelerator": runs.read_json(self.context.accel_file) if self.context.accel_file else None,
        }
        try:
            return runs.save(self.context.report_dir, record, report.html(record, self.context.report_dir / "runs"),
                             report.tasks_junit(record))
        except Exception as err:  # noqa: BLE001 - a report never fails the build it reports on
            self.out.write(f"vaultdoit: warning: the run's report was not written: {type(err).__name__}: {err}\n")
            return None


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def summary(items: list[TaskRun], seconds: float, *, colour: bool = False) -> str:
    """The table printed at the end of a run: task, result, time (and the last build's), size, cache hits."""
    rows = [("task", "result", "time", "last build", "size", "cache hits")]
    for item in items:
        # The build before this run's: what it was expected to take, or the stage's record.
        last = item.expected if item.result in ("ran", "failed") else item.facts.get("build_seconds")
        rows.append((item.name, item.result, duration(item.elapsed) if item.elapsed else "—",
                     duration(last) if last else "—", size(item.facts["bytes"]) if "bytes" in item.facts else "—",
                     runs.cache_hits(item) or "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        style = {"failed": "red", "interrupted": "red", "ran": "green", "up to date": "dim"}.get(row[1]) if n else "bold"
        if colour and style:
            text = f"{ANSI[style]}{text}{RESET}"
        lines.append(text)
    counts = {r: sum(i.result == r for i in items) for r in ("ran", "up to date", "failed", "interrupted", "not run")}
    tail = ", ".join(f"{n} {r}" for r, n in counts.items() if n)
    rule = "-" * max(len(lines[0]), 20)
    return "\n".join([rule, *lines, rule, f"{tail or 'no tasks'} in {duration(seconds)}", ""]) + "\n"
