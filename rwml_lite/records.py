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
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):  # a line without its newline is a torn write: never complete
                yield json.loads(line)


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
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            f.truncate(keep)
