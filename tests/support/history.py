"""Histories of fault tests: what every process did, recorded so that a kill -9 loses nothing written.

Each process (publisher, consumer, the test injecting faults) appends JSON lines to a file of its
own in one directory: ``<role>-<pid>.jsonl``. Every record is one ``write()`` on a file opened
with ``O_APPEND``, unbuffered in Python, so a record is either wholly in the file (in the kernel's
page cache, which survives the process) or not at all; a line torn by a crash of the machine
itself is skipped when reading.

Record kinds (``kind`` field), each with ``t`` (wall clock, ns), ``process`` and ``pid``:

* ``attempt`` — a publish is about to be made: ``id`` (event id), ``key``, ``seq`` (the
  publisher's order within the key), optionally ``attempt`` (unique id of this publish attempt);
* ``ack`` — the broker acknowledged it (Kafka delivery report, RabbitMQ confirm); ``fail`` — the
  publish was reported failed (``error``); ``aborted`` — it was part of an aborted transaction;
* ``invoke`` — a handler was called with the event (``id``, ``key``, ``seq``, ``attempt``);
* ``handled`` — the handler's side effect was committed (its completion);
* ``commit`` — the consumer committed offsets or acknowledged deliveries (``ids`` or ``detail``);
* ``fault`` — the test injected a fault: ``name`` and ``phase`` (``start``/``end``).

:mod:`tests.support.history_check` turns the records into a report (lost, duplicated, ...).
Handlers in ``topo run`` processes find the directory in ``TOPO_HISTORY_DIR``
(:meth:`HistoryRecorder.from_env`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

HISTORY_DIR_ENV = "TOPO_HISTORY_DIR"
Kind = Literal["attempt", "ack", "fail", "aborted", "invoke", "handled", "commit", "fault"]
KINDS: tuple[Kind, ...] = ("attempt", "ack", "fail", "aborted", "invoke", "handled", "commit", "fault")


@dataclasses.dataclass(frozen=True)
class Record:
    kind: Kind
    t: int  # wall clock in nanoseconds (every process runs on this machine: one clock)
    process: str
    pid: int
    id: str | None = None
    key: str | None = None
    seq: int | None = None
    attempt: str | None = None
    error: str | None = None
    name: str | None = None  # fault name
    phase: str | None = None  # fault phase: start / end
    ids: tuple[str, ...] = ()
    detail: str | None = None

    @property
    def seconds(self) -> float:
        return self.t / 1e9

    def to_json(self) -> str:
        fields = {name: value for name, value in dataclasses.asdict(self).items()
                  if value is not None and value != ()}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        data: dict[str, Any] = json.loads(text)
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown record kind {data.get('kind')!r}")
        data["ids"] = tuple(data.get("ids", ()))
        return cls(**data)


class HistoryRecorder:
    """Appends this process's records to ``<directory>/<process>-<pid>.jsonl``; safe from threads."""

    def __init__(self, directory: str | os.PathLike[str], process: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = process
        self.pid = os.getpid()
        self.path = self.directory / f"{process}-{self.pid}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @classmethod
    def from_env(cls, process: str) -> HistoryRecorder | None:
        """A recorder into ``$TOPO_HISTORY_DIR``, or None when the variable is unset (not under test)."""
        directory = os.environ.get(HISTORY_DIR_ENV)
        return cls(directory, process) if directory else None

    def record(self, kind: Kind, **fields: Any) -> Record:
        if "ids" in fields:
            fields["ids"] = tuple(fields["ids"])
        entry = Record(kind=kind, t=time.time_ns(), process=self.process, pid=self.pid, **fields)
        os.write(self._fd, (entry.to_json() + "\n").encode())  # one write: whole or absent after a kill
        return entry

    def attempt(self, event_id: str, key: str, seq: int, attempt: str | None = None) -> Record:
        return self.record("attempt", id=event_id, key=key, seq=seq, attempt=attempt)

    def ack(self, event_id: str, attempt: str | None = None) -> Record:
        return self.record("ack", id=event_id, attempt=attempt)

    def fail(self, event_id: str, error: str, attempt: str | None = None) -> Record:
        return self.record("fail", id=event_id, error=error, attempt=attempt)

    def aborted(self, event_id: str, attempt: str | None = None) -> Record:
        return self.record("aborted", id=event_id, attempt=attempt)

    def invoke(self, event_id: str, key: str | None = None, seq: int | None = None,
               attempt: str | None = None) -> Record:
        return self.record("invoke", id=event_id, key=key, seq=seq, attempt=attempt)

    def handled(self, event_id: str, key: str | None = None, seq: int | None = None,
                attempt: str | None = None) -> Record:
        return self.record("handled", id=event_id, key=key, seq=seq, attempt=attempt)

    def commit(self, ids: Iterable[str] = (), detail: str | None = None) -> Record:
        return self.record("commit", ids=tuple(ids), detail=detail)

    def fault(self, name: str, phase: Literal["start", "end"]) -> Record:
        return self.record("fault", name=name, phase=phase)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> HistoryRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class History:
    """Every record of a run, in time order, and the lines that could not be read."""

    records: tuple[Record, ...]
    torn: tuple[str, ...]  # "file:line" of lines skipped (a write cut by a crash of the machine)

    def of(self, *kinds: Kind) -> Iterator[Record]:
        return (record for record in self.records if record.kind in kinds)


def read_history(directory: str | os.PathLike[str]) -> History:
    """All ``*.jsonl`` files of ``directory``, merged in time order (ties: file, then line order)."""
    records: list[tuple[int, str, int, Record]] = []
    torn: list[str] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = Record.from_json(line)
            except (ValueError, TypeError):
                torn.append(f"{path.name}:{number}")
                continue
            records.append((record.t, path.name, number, record))
    records.sort(key=lambda item: item[:3])
    return History(records=tuple(item[3] for item in records), torn=tuple(torn))
