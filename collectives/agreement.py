"""The agreement check: before data moves, every rank learns what every other rank asked for.

Each collective sends one fixed-size record to every other rank: a status byte and the
call's signature as text (sequence number, collective, op, algorithm, compression, dtype,
shape, check_finite). Records are compared byte for byte; only when they differ are they
decoded, to name the ranks and fields that differ. Every rank sees the same records, so
every rank raises the same error, before any data moved, and the next collective proceeds.

The same guard gives timeouts their context (collective, sequence number, arguments) and
refuses further collectives once one timed out: messages may still be in flight then.

Example::

    agreement = Agreement(transport, check=True)
    with agreement.collective("allreduce", seq, deadline) as call:
        ...                                     # validate; errors here reach every rank
        call.agree(x, op="sum", algorithm="ring", compression=None)
        ...                                     # move data
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import kernels

from .errors import (CollectiveError, CollectiveTimeout, MismatchError, NonFiniteError,
                     rank_list)

__all__ = ["Agreement", "Call", "RECORD_BYTES"]

RECORD_BYTES = 256
OK, NONFINITE, INVALID = 0, 1, 2  # the status byte
_SEP = "\x1f"


class Call:
    """One collective in progress: its name, sequence number, deadline and, once agreed, fields."""

    __slots__ = ("_agreement", "name", "seq", "deadline", "fields", "pending", "agreed")

    def __init__(self, agreement: "Agreement", name: str, seq: int, deadline: float):
        self._agreement = agreement
        self.name = name
        self.seq = seq
        self.deadline = deadline
        self.fields: dict[str, str] = {}
        self.pending = True  # True until the records were exchanged (or need not be)
        self.agreed = False  # the ranks agreed (or the check is off): data may move

    @property
    def label(self) -> str:
        """`allreduce #7 (op=sum, algorithm=ring, dtype=float32, shape=(1000,))`."""
        details = ", ".join(f"{k}={v}" for k, v in self.fields.items()
                            if k not in ("seq", "collective"))
        return f"{self.name} #{self.seq}" + (f" ({details})" if details else "")

    def agree(self, x: Any, *, check_finite: bool = False, **fields: object) -> None:
        """Check that every rank passes the same `fields` and x's dtype and shape.

        `x` is an array or a sequence of arrays. Raises MismatchError (ranks differ) or
        NonFiniteError (`check_finite` and some rank's input holds NaN or Inf) on every rank.
        """
        self._agreement.agree(self, x, check_finite, fields)


class Agreement:
    """A communicator's guard around its collectives; `check=False` skips the exchange."""

    def __init__(self, transport, *, check: bool):
        self._transport = transport
        self.check = check
        self._broken: str | None = None

    @contextlib.contextmanager
    def collective(self, name: str, seq: int, deadline: float) -> Iterator[Call]:
        """Run one collective: errors before `agree` reach every rank, timeouts get context."""
        if self._broken is not None:
            raise CollectiveError(
                f"{name} #{seq}: this communicator is unusable since {self._broken}; "
                "call comm.abort()"
            )
        call = Call(self, name, seq, deadline)
        try:
            yield call
        except CollectiveTimeout as error:
            self._broken = f"{call.name} #{call.seq} timed out"
            raise CollectiveTimeout(f"{call.label}: {error}") from None
        except Exception as error:
            if call.pending and self.check:
                self._share_failure(call, error)
            elif isinstance(error, MismatchError) and call.agreed:
                self._broken = f"{call.name} #{call.seq} found the ranks' messages out of step"
            raise

    def agree(self, call: Call, x: Any, check_finite: bool, fields: dict[str, object]) -> None:
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
        call.fields = {
            "seq": str(call.seq), "collective": call.name,
            **{k: str(getattr(v, "value", v)) for k, v in fields.items()},
            "dtype": _one_or_list([str(a.dtype) for a in arrays], x),
            "shape": _one_or_list([str(a.shape) for a in arrays], x),
            "check_finite": str(bool(check_finite)),
        }
        if not (self.check or check_finite):
            call.pending = False
            call.agreed = True
            return
        status = NONFINITE if check_finite and not all(map(_finite, arrays)) else OK
        rows = self._exchange(call, status, _SEP.join(f"{k}={v}" for k, v in call.fields.items()))
        if (rows[:, 1:] == rows[0, 1:]).all() and not rows[:, 0].any():
            call.agreed = True
            return
        if (rows[:, 0] == INVALID).any():
            raise self._invalid(call, rows)
        signatures = [_decode(row) for row in rows]
        if any(s != signatures[0] for s in signatures):
            raise MismatchError(f"{call.name} #{call.seq}: ranks disagree, no data moved: "
                                f"{_differences(signatures)}")
        bad = np.flatnonzero(rows[:, 0] == NONFINITE).tolist()
        raise NonFiniteError(
            f"{call.label}: check_finite: {rank_list(bad)} {'has' if len(bad) == 1 else 'have'} "
            "NaN or Inf in the input; nothing was reduced"
        )

    def _exchange(self, call: Call, status: int, text: str) -> np.ndarray:
        """Send our record to every rank and receive theirs, within the call's deadline."""
        record = np.zeros(RECORD_BYTES, np.uint8)
        record[0] = status
        body = _fit(text, RECORD_BYTES - 1)
        record[1 : 1 + len(body)] = np.frombuffer(body, np.uint8)
        rows = self._transport.allgather_record(record, call.deadline, "the agreement records")
        call.pending = False
        return rows

    def _share_failure(self, call: Call, error: Exception) -> None:
        """Tell the other ranks that this rank rejected its arguments, so they do not wait."""
        try:
            self._exchange(call, INVALID, f"{type(error).__name__}: {error}")
        except CollectiveTimeout as timeout:
            self._broken = f"{call.name} #{call.seq} timed out"
            error.add_note(f"the other ranks could not be told: {timeout}")

    def _invalid(self, call: Call, rows: np.ndarray) -> MismatchError:
        bad = np.flatnonzero(rows[:, 0] == INVALID).tolist()
        reasons = "; ".join(f"rank {r}: {_text(rows[r])}" for r in bad)
        verb = "rejected its" if len(bad) == 1 else "rejected their"
        return MismatchError(
            f"{call.name} #{call.seq}: {rank_list(bad)} {verb} arguments, no data moved ({reasons})"
        )


def _finite(array: Any) -> bool:
    return array.dtype.kind in "iub" or bool(kernels.array_module(array).isfinite(array).all())


def _one_or_list(values: list[str], x: Any) -> str:
    return f"[{', '.join(values)}]" if isinstance(x, (list, tuple)) else values[0]


def _fit(text: str, limit: int) -> bytes:
    """`text` as UTF-8 of at most `limit` bytes: over-long field values become checksums."""
    body = text.encode()
    while len(body) > limit:
        fields = body.decode().split(_SEP)
        longest = max(range(len(fields)), key=lambda i: len(fields[i]))
        key, _, value = fields[longest].partition("=")
        short = f"{key}=<{len(value)} chars, crc32 {zlib.crc32(value.encode()):08x}>"
        if len(short) >= len(fields[longest]):
            return body[:limit]  # an error text: cut it
        fields[longest] = short
        body = _SEP.join(fields).encode()
    return body


def _text(row: np.ndarray) -> str:
    return row[1:].tobytes().rstrip(b"\0").decode(errors="replace")


def _decode(row: np.ndarray) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in _text(row).split(_SEP))


def _differences(signatures: Sequence[dict[str, str]]) -> str:
    """`rank 2 has shape (1001,), ranks 0-1 have (1000,)` for every field that differs."""
    keys = list(dict.fromkeys(k for s in signatures for k in s))
    parts = []
    for key in keys:
        groups: dict[str, list[int]] = {}
        for rank, signature in enumerate(signatures):
            groups.setdefault(signature.get(key, "<missing>"), []).append(rank)
        if len(groups) == 1:
            continue
        ordered = sorted(groups.items(), key=lambda item: (len(item[1]), item[1][0]))
        said = [f"{rank_list(ranks)} {'has' if len(ranks) == 1 else 'have'}"
                + (f" {key}" if i == 0 else "") + f" {value}"
                for i, (value, ranks) in enumerate(ordered)]
        parts.append(", ".join(said))
    return "; ".join(parts)
