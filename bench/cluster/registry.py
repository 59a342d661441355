"""Which labs exist, who made them, and whether that process still lives.

A lab's record is ``/run/collectives-cluster/<name>/lab.json``, written before its first
namespace and removed after its last, so a lab is found either way: by its record, or by
namespaces named ``clab-xxxxxx-...`` whose record is gone. A lab made by a process (a
``with Lab(...)``) records that process; it is stale once the process is gone (found by
pid and start time, so a reused pid does not count). A lab made by ``collectives-cluster
up`` has no owner and lasts until ``collectives-cluster down``.

Example::

    record = Record(name="clab-1a2b3c", nodes=2, link="1gbit", owner=Owner.current())
    save(record)
    [r.name for r in records() if r.stale]
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import netns
from .layout import PREFIX, is_lab_name, lab_of

__all__ = ["ROOT", "Owner", "Record", "directory", "load", "records", "remove", "save"]

ROOT = Path("/run/collectives-cluster")
_RECORD = "lab.json"


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


@dataclass(frozen=True)
class Owner:
    """The process a lab lives and dies with."""

    pid: int
    start: int

    @classmethod
    def current(cls) -> "Owner":
        return cls(os.getpid(), _start_time(os.getpid()))

    @property
    def alive(self) -> bool:
        return _start_time(self.pid) == self.start


@dataclass(frozen=True)
class Record:
    """What is known about a lab: size, link and owner (None: kept until `down`).

    A lab found only by its namespaces (``recorded=False``) lost its record while being
    torn down, and counts as stale.
    """

    name: str
    nodes: int
    link: str
    owner: Owner | None
    created: float = 0.0
    recorded: bool = True

    @classmethod
    def leftover(cls, name: str) -> "Record":
        """The stand-in for namespaces of lab ``name`` without a record."""
        return cls(name=name, nodes=0, link="unknown", owner=None, recorded=False)

    @property
    def stale(self) -> bool:
        """Its owner (or its record) is gone, so nothing but `down` will tear it down."""
        return not self.recorded or (self.owner is not None and not self.owner.alive)

    def describe(self) -> str:
        if not self.recorded:
            return f"{self.name}: namespaces without a record: stale"
        who = ("kept until `collectives-cluster down`" if self.owner is None
               else f"owner pid {self.owner.pid} " + ("gone: stale" if self.stale else "alive"))
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        return f"{self.name}: {self.nodes} nodes, link {self.link}, made {made}, {who}"


def directory(name: str) -> Path:
    """Where the lab ``name`` keeps its record and launcher script."""
    return ROOT / name


def save(record: Record) -> None:
    """Write ``record`` (atomically: a reader sees the old file or the new one)."""
    folder = directory(record.name)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{_RECORD}.{os.getpid()}"
    partial.write_text(json.dumps(asdict(record)))
    partial.replace(folder / _RECORD)


def load(name: str) -> Record | None:
    """The record of lab ``name``, None when there is none."""
    try:
        data = json.loads((directory(name) / _RECORD).read_text())
    except (OSError, ValueError):
        return None
    owner = data.pop("owner")
    return Record(**data, owner=None if owner is None else Owner(**owner))


def records() -> list[Record]:
    """Every lab on this machine: its record, or a stale stand-in for leftover namespaces."""
    names = {path.name for path in ROOT.glob(f"{PREFIX}*") if is_lab_name(path.name)}
    names |= {lab_of(ns) for ns in netns.namespaces()} - {None}
    return [load(name) or Record.leftover(name) for name in sorted(names)]


def remove(name: str) -> None:
    """Forget lab ``name`` (its record and launcher script)."""
    shutil.rmtree(directory(name), ignore_errors=True)
