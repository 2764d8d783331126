"""The console's progress display, one for every long loop: episodes (collect, eval, the policy stage) and
trainer steps (filter, RWML, WM SFT).

On a terminal it is rich's live bars. Written to a file or a pipe (CI, nohup, a cluster job's log) a live bar
means nothing and rich cuts every line at 80 columns (`policy ━━ 1… 0… ETA 0…`), so there each task writes
whole plain lines instead: its label, done/total, elapsed time, ETA and running numbers, on its first update,
then at most once every PLAIN_INTERVAL seconds, and its last state when it is removed or the display stops.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Seconds between two plain lines of one task where the console is no terminal: a log of a day's run stays short.
PLAIN_INTERVAL = 30.0


def console_progress(disable: bool = False, stream: TextIO | None = None) -> Progress:
    """The display on `stream` (stderr by default); each task is added with an `info` field holding its running
    numbers. `disable` (a process other than the main one) shows nothing."""
    console = Console(file=stream) if stream else Console(stderr=True)
    if disable or console.is_terminal:
        return Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
            disable=disable,
        )  # fmt: skip
    return PlainProgress(console)


class PlainProgress(Progress):
    """rich's Progress keeping its tasks (counts, fields, times) without a live bar: each task's state is written
    as one whole line to the console's file, never wrapped or cut."""

    def __init__(self, console: Console):
        super().__init__(console=console, disable=True)
        self._written: dict[TaskID, float] = {}  # task -> when its last line was written
        self._unwritten: set[TaskID] = set()  # tasks updated since their last line
        # the ETA's basis, a task's count when added: a resumed run's episodes on disk took no time now
        self._first: dict[TaskID, float] = {}

    def add_task(self, description, start=True, total=100.0, completed=0, visible=True, **fields) -> TaskID:
        task = super().add_task(description, start, total, completed, visible, **fields)
        self._first[task] = completed
        self._write(task)
        return task

    def update(self, task_id: TaskID, **changes) -> None:
        super().update(task_id, **changes)
        self._unwritten.add(task_id)
        if time.monotonic() - self._written[task_id] >= PLAIN_INTERVAL:
            self._write(task_id)

    def remove_task(self, task_id: TaskID) -> None:
        if task_id in self._unwritten:
            self._write(task_id)
        super().remove_task(task_id)

    def stop(self) -> None:
        for task in sorted(self._unwritten):
            self._write(task)
        super().stop()

    def _write(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        elapsed = task.elapsed or 0.0
        done = task.completed - self._first[task_id]
        eta = (task.total - task.completed) * elapsed / done if task.total is not None and done > 0 else None
        total = "?" if task.total is None else f"{task.total:.0f}"
        parts = [
            Text.from_markup(task.description).plain,
            f"{task.completed:.0f}/{total}",
            _clock(elapsed),
            f"ETA {_clock(eta) if eta is not None else '-:--:--'}",
            task.fields.get("info", ""),
        ]
        stream = self.console.file
        stream.write(" ".join(p for p in parts if p) + "\n")
        stream.flush()
        self._written[task_id] = time.monotonic()
        self._unwritten.discard(task_id)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=max(0, int(seconds))))
