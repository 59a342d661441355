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
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from collectives.files import read_regular

from . import netns
from .errors import LabError
from .layout import MAX_NODES, PREFIX, is_lab_name, lab_of

__all__ = ["ROOT", "Owner", "Record", "directory", "load", "records", "remove", "save"]

ROOT = Path("/run/collectives-cluster")
_RECORD = "lab.json"
_RECORD_LIMIT = 1 << 20  # bytes: a record is a few hundred (no FIFO, no /dev/zero)


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

    A lab without a readable record (``recorded=False``: found by its namespaces or folder,
    whose record was lost while being torn down, or is not a record) counts as stale.
    """

    name: str
    nodes: int
    link: str
    owner: Owner | None
    created: float = 0.0
    recorded: bool = True

    @classmethod
    def leftover(cls, name: str) -> "Record":
        """The stand-in for lab ``name`` without a readable record."""
        return cls(name=name, nodes=0, link="unknown", owner=None, recorded=False)

    @property
    def stale(self) -> bool:
        """Its owner (or its record) is gone, so nothing but `down` will tear it down."""
        return not self.recorded or (self.owner is not None and not self.owner.alive)

    def describe(self) -> str:
        if not self.recorded:
            return f"{self.name}: no readable record: stale"
        who = ("kept until `collectives-cluster down`" if self.owner is None
               else f"owner pid {self.owner.pid} " + ("gone: stale" if self.stale else "alive"))
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        return f"{self.name}: {self.nodes} nodes, link {self.link}, made {made}, {who}"


def directory(name: str) -> Path:
    """Where the lab ``name`` keeps its record and launcher script."""
    return ROOT / name


def save(record: Record) -> None:
    """Write ``record`` atomically: a reader sees the old file or the new one, and a new
    lab's folder appears with its record in it (a folder without one reads as stale)."""
    folder = directory(record.name)
    text = json.dumps(asdict(record))
    if folder.is_dir():
        partial = folder / f".{_RECORD}.{os.getpid()}"
        partial.write_text(text)
        partial.replace(folder / _RECORD)
        return
    ROOT.mkdir(parents=True, exist_ok=True)
    partial_folder = Path(tempfile.mkdtemp(prefix=f".{record.name}.", dir=ROOT))
    try:
        (partial_folder / _RECORD).write_text(text)
        os.chmod(partial_folder, 0o755)
        partial_folder.rename(folder)
    except BaseException:  # (a signal here left a hidden folder nothing lists)
        shutil.rmtree(partial_folder, ignore_errors=True)
        raise


def load(name: str) -> Record | None:
    """The record of lab ``name``; None when there is none or it cannot be read (not JSON,
    or not a record: a lab without a readable record counts as stale)."""
    try:
        return _record(name, json.loads(read_regular(directory(name) / _RECORD, _RECORD_LIMIT)))
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None


def _record(name: str, data) -> Record:
    """Lab ``name``'s Record in its lab.json's JSON; TypeError or KeyError when it is not
    one (fields other than a record's are ignored)."""
    owner = data["owner"]
    if owner is not None:
        owner = Owner(pid=_int(owner["pid"]), start=_int(owner["start"]))
    nodes, created = _int(data["nodes"]), data.get("created", 0.0)
    if data["name"] != name or not isinstance(data["link"], str) or not 1 <= nodes <= MAX_NODES \
            or isinstance(created, bool) or not isinstance(created, (int, float)) \
            or not 0 <= created < 1e11:  # (seconds since 1970: strftime takes them)
        raise TypeError(f"not a record of lab {name}")
    return Record(name=name, nodes=nodes, link=data["link"], owner=owner, created=float(created))


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def records() -> list[Record]:
    """Every lab on this machine: its record, or a stale stand-in for leftover namespaces."""
    names = {path.name for path in ROOT.glob(f"{PREFIX}*") if is_lab_name(path.name)}
    names |= {lab_of(ns) for ns in netns.namespaces()} - {None}
    return [load(name) or Record.leftover(name) for name in sorted(names)]


def remove(name: str) -> None:
    """Forget lab ``name`` (its record and launcher script); LabError naming the entry
    where it cannot be removed."""
    entry = directory(name)
    try:
        if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
            entry.unlink()
        else:
            shutil.rmtree(entry)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise LabError(f"cannot remove {entry}: {error.strerror or error}; remove it by "
                       "hand") from None
