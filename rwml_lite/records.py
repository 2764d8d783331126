"""How artifacts reach disk: append-only JSON lines and atomic whole-file writes.

A run can be killed at any instant (SIGKILL, OOM, a pre-empted node). Records are appended one
complete line per write and a torn last line is cut away on the next open, so no finished
record is ever lost or duplicated; manifests and summaries are written to a temporary file and
renamed over the old one, so they are either the old or the new version, never half of each.
Every record carries `schema` so later versions can read old runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rwml_lite.errors import RwmlError

SCHEMA = 1


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write a whole JSONL file atomically; returns the number of records."""
    lines = [json.dumps({"schema": SCHEMA, **r}) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Every record of `path`, without its torn last line: one without its newline (a kill mid-write), or one
    that is no JSON (the same, after an editor or `echo >>` gave it a newline); JsonlAppender cuts either. A
    broken line with lines after it is damage no kill leaves: refused, naming the file and the line."""
    broken = None
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if broken is not None:
                raise broken
            if not line.endswith("\n"):
                return
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                broken = _damaged(path, number, e)
            else:
                yield record


def read_json(path: Path) -> Any:
    """A whole JSON file of a run folder (written atomically, so only an edit or a disk fault breaks it)."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _damaged(path, e.lineno, e) from None


def _damaged(path: Path, number: int, e: json.JSONDecodeError) -> RwmlError:
    return RwmlError(
        f"{path}, line {number}: not valid JSON ({e.msg}, column {e.colno}); rwml-lite never writes such a line, so "
        f"the file was edited or damaged. Mend or delete that line, or move the file away and rerun the stage "
        f"that writes it (`rwml-lite train RECIPE --redo STAGE`)."
    )


class JsonlAppender:
    """Appends one record per line, flushed and fsynced, after cutting a torn tail left by a kill."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self._file = open(path, "a")

    def append(self, record: dict) -> None:
        self._file.write(json.dumps({"schema": SCHEMA, **record}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Cut the torn last line `iter_jsonl` skips, so that the next record starts a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        last = data.rfind(b"\n", 0, max(keep - 1, 0)) + 1  # where the last whole line starts
        try:
            json.loads(data[last:keep])
        except ValueError:  # no JSON, or bytes that are no UTF-8
            keep = last
        if keep != len(data):
            f.truncate(keep)
