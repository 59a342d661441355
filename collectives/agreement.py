"""The agreement check: before data moves, every rank learns what every other rank asked for.

Each collective sends every other rank one record (`HostTransport.exchange_records`): a
32-byte header (status, sequence number, a 64-bit digest of the call's signature) and, for
small calls, the data itself (the call then needs no other message: see `riding`). The
signature holds the collective, its options, the arrays' dtypes and shapes, and how and
where it was issued (sync or async, the issuing thread's name), so ranks that pair
different calls (another order, another thread) are caught even when the arrays agree.
Headers are compared byte for byte; only when they differ do the ranks exchange their
signatures as text, to name the ranks and fields that differ. Every rank sees the same
records, so every rank raises the same error, before any data moved, and the next
collective proceeds.

The guard around a collective (`enter`, `failed`) gives timeouts their context and refuses
further collectives once one timed out or a peer gave up: messages may still be in flight.
A rank that times out tells the others (a Notice), so they stop waiting for it at once.

Example::

    agreement = Agreement(transport, check=True)
    seq = agreement.enter("allreduce")
    rows = agreement.agree(signature, seq, deadline)     # MismatchError on every rank
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import NoReturn
from dataclasses import dataclass

import numpy as np

from .errors import (CollectiveError, CollectiveTimeout, MismatchError, NonFiniteError,
                     PeerError, rank_list)

__all__ = ["Agreement", "Signature", "riding", "differences", "HEADER_BYTES", "RIDE_BYTES"]

HEADER_BYTES = 32
RIDE_BYTES = 4096  # data of at most this many bytes rides with the record
TEXT_BYTES = 1024  # a signature or error as text, in the second exchange
OK, NONFINITE, INVALID = 0, 1, 2  # the status byte
_HEADER = struct.Struct("<qqqq")  # status, sequence number, digest, payload length
_SEP = "\x1f"
_LABEL_FIELDS = ("op", "algorithm", "compression", "fusion_bytes", "root", "dtype", "shape",
                 "check_finite")


@dataclass(frozen=True, slots=True)
class Signature:
    """What a rank asked for: `fields` as text (for messages) and their 64-bit digest."""

    name: str
    fields: tuple[tuple[str, str], ...]
    digest: int

    @classmethod
    def of(cls, name: str, key: tuple, describe: Callable[[], dict[str, object]]) -> "Signature":
        """The signature of collective `name` whose call is summed up by the hashable `key`;
        `describe()` gives its fields, asked only the first time a key is seen."""
        key = (name, key)
        cached = _SIGNATURES.get(key)
        if cached is None:
            fields = describe()
            text = tuple((k, str(getattr(v, "value", v))) for k, v in fields.items())
            blob = "\x1e".join([name, *(f"{k}={v}" for k, v in text)]).encode()
            digest = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little",
                                    signed=True)
            cached = cls(name, text, digest)
            if len(_SIGNATURES) >= _SIGNATURES_LIMIT:
                _SIGNATURES.clear()
            _SIGNATURES[key] = cached
        return cached

    def label(self, seq: int) -> str:
        """`allreduce #7 (op=sum, algorithm=ring, dtype=float32, shape=(1000,))`."""
        details = ", ".join(f"{k}={v}" for k, v in self.fields if k in _LABEL_FIELDS)
        return f"{self.name} #{seq}" + (f" ({details})" if details else "")

    def text(self, seq: int) -> str:
        fields = [("seq", str(seq)), ("collective", self.name), *self.fields]
        return _SEP.join(f"{k}={v}" for k, v in fields)


_SIGNATURES: dict[tuple, Signature] = {}
_SIGNATURES_LIMIT = 4096


class Agreement:
    """A communicator's guard around its collectives; `check=False` skips the exchange."""

    def __init__(self, transport, *, check: bool):
        self._transport = transport
        self.check = check
        self.seq = 0  # the number of the collective running or last run
        self.broken: str | None = None
        self._record = np.zeros(HEADER_BYTES + RIDE_BYTES, np.uint8)
        self._record_view = memoryview(self._record)
        self._heads: dict[int, tuple] = {}  # id(rows) -> (rows, int64 view of the headers)
        self._settled = 0  # the last collective whose outcome every rank knows without
        # data: a refusal it shared, or the agreement's MismatchError / NonFiniteError

    def enter(self, name: str) -> int:
        """The next collective starts: its sequence number; refused once the communicator is
        broken, or when a peer already said it will not take part."""
        self.seq = seq = self.seq + 1
        if self.broken is not None:
            raise CollectiveError(f"{name} #{seq}: this communicator is unusable since "
                                  f"{self.broken}; call comm.abort()")
        try:
            self._transport.begin(seq)
        except PeerError as error:
            self.broken = str(error).split(": ", 1)[-1]
            raise PeerError(f"{name} #{seq}: {error}") from None
        except BaseException as error:  # an interrupt: this rank is a collective ahead
            self._give_up(f"{name} #{seq} ended ({type(error).__name__}) as it began", seq)
            raise
        return seq

    def agree(self, signature: Signature, seq: int, deadline: float, finite: bool = True,
              payload=None, check_finite: bool = False):
        """Check that every rank made the same call; returns the records' rows, or None when
        nothing was exchanged (check off, no payload, no finite check).

        `payload` (at most RIDE_BYTES, 1-D uint8) rides with the record: row r's
        `riding(rows, r)` is then rank r's payload. Raises MismatchError (ranks differ) or
        NonFiniteError (`check_finite` and some rank's `finite` is False) on every rank.
        """
        if not (self.check or check_finite or payload is not None):
            return None
        length = 0
        if payload is not None:
            length = payload.size
            self._record_view[HEADER_BYTES: HEADER_BYTES + length] = memoryview(payload)
        status = OK if finite else NONFINITE
        rows = self._exchange(status, seq, signature.digest, length, deadline)
        if (self.check or check_finite) and not (status == OK and self._all_same(rows)):
            self._refuse(signature, seq, rows, deadline)
        return rows

    def payload_slot(self, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """Where the data of a call that rides can be written in place (an array of `dtype`
        and `shape` in the record, at most RIDE_BYTES); `ride` then sends it."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > RIDE_BYTES:
            raise ValueError(f"a payload holds at most {RIDE_BYTES} bytes, got {nbytes}")
        return self._record[HEADER_BYTES: HEADER_BYTES + nbytes].view(dtype).reshape(shape)

    def ride(self, signature: Signature, seq: int, deadline: float, nbytes: int):
        """`agree` (the check on) with the `nbytes` of payload written in `payload_slot`:
        the records' rows (the small-call lane's path, one copy fewer)."""
        rows = self._exchange(OK, seq, signature.digest, nbytes, deadline)
        if not self._all_same(rows):
            self._refuse(signature, seq, rows, deadline)
        return rows

    def _all_same(self, rows) -> bool:
        """Whether every rank's (status, sequence number, digest) is the same (this rank's
        is among them: row `rank` is its own record)."""
        heads = self._heads.get(id(rows))
        if heads is None or heads[0] is not rows:  # transports reuse a few rows arrays
            if len(self._heads) >= 4:
                self._heads.clear()
            heads = self._heads[id(rows)] = (rows, rows.view(np.int64)[:, :3])
        values = heads[1].tolist()
        return values.count(values[0]) == len(values)

    def share_failure(self, signature: Signature, seq: int, deadline: float,
                      error: Exception) -> None:
        """This rank rejected its arguments: tell the others (they raise MismatchError; with
        the check off they are not told)."""
        if self.check:
            try:
                rows = self._exchange(INVALID, seq, 0, 0, deadline)
                self._texts(rows, f"{type(error).__name__}: {error}", deadline)
            except CollectiveTimeout as timeout:
                self.broken = f"{signature.name} #{seq} timed out"
                error.add_note(f"the other ranks could not be told: {timeout}")
                return
        self._settled = seq

    def failed(self, signature: Signature, seq: int, error: BaseException,
               moving: bool) -> BaseException:
        """What to raise for `error` escaping collective `seq`: the error itself, or for a
        timeout or a peer's notice the error labelled with the call, advising abort(). The
        communicator stays usable only where every rank knows the call's outcome without
        data: a refusal of its arguments (`share_failure`) or the agreement's MismatchError
        or NonFiniteError. Anything else that escapes a collective breaks it, and the peers
        are told that this rank gave up: a timeout, a peer's notice, any error once data
        moves (`moving`: messages may be in flight), and any other error or interrupt
        between `enter` and the data (a signal handler that raises, KeyboardInterrupt: the
        peers wait for a record or data that will not come; the ninth and tenth reviews
        found such ranks left a collective ahead, every later call a MismatchError)."""
        timeout = isinstance(error, (CollectiveTimeout, PeerError))
        if self._settled == seq and not (timeout or moving) and isinstance(error, Exception):
            return error
        if isinstance(error, CollectiveTimeout):
            reason = f"{signature.name} #{seq} timed out"
        elif isinstance(error, PeerError):
            reason = f"{signature.name} #{seq} was abandoned ({str(error).split(': ', 1)[-1]})"
        elif not moving:
            reason = f"{signature.name} #{seq} ended ({type(error).__name__}) before its data moved"
        elif isinstance(error, MismatchError):
            reason = f"{signature.name} #{seq} found the ranks' messages out of step"
        else:
            reason = f"{signature.name} #{seq} failed while data moved ({type(error).__name__})"
        self._give_up(reason, seq)
        if not timeout:
            return error
        return type(error)(f"{signature.label(seq)}: {error}; this communicator is unusable "
                           "now: call comm.abort()")

    def _give_up(self, reason: str, seq: int) -> None:
        """The communicator is unusable from now on (the first reason stays), and the peers
        are told that this rank gave up on collective `seq`."""
        if self.broken is None:
            self.broken = reason
        self._transport.tell_peers("gave up", seq)

    def raise_failed(self, signature: Signature, seq: int, error: BaseException,
                     moving: bool) -> NoReturn:
        """Raise what `failed` says for `error` (the error itself keeps its cause)."""
        raised = self.failed(signature, seq, error, moving)
        if raised is error:
            raise error
        raise raised from None

    def _exchange(self, status: int, seq: int, digest: int, length: int, deadline: float):
        """Send the record (header, then `length` bytes of payload already in place)."""
        _HEADER.pack_into(self._record, 0, status, seq, digest, length)
        return self._transport.exchange_records(self._record[: HEADER_BYTES + length], deadline,
                                                "the agreement records")


    def _texts(self, rows, text: str, deadline: float) -> list[str]:
        """Second exchange: every rank's text (signature or error), row r from rank r."""
        body = _fit(text, TEXT_BYTES - 1)
        record = np.zeros(HEADER_BYTES + TEXT_BYTES, np.uint8)
        record[HEADER_BYTES: HEADER_BYTES + len(body)] = np.frombuffer(body, np.uint8)
        texts = self._transport.exchange_records(record, deadline, "the agreement details")
        # (rows are the transport's reused buffers: past the text lie earlier records' bytes)
        return [row[HEADER_BYTES: HEADER_BYTES + TEXT_BYTES].tobytes().rstrip(b"\0")
                .decode(errors="replace") for row in texts]

    def _refuse(self, signature: Signature, seq: int, rows, deadline: float) -> None:
        statuses = rows[:, 0].copy()  # the next exchange's receives may reuse rows' buffer
        same = (rows[:, 8:24] == rows[0, 8:24]).all()
        if same and not (statuses == INVALID).any():
            bad = np.flatnonzero(statuses == NONFINITE).tolist()
            self._settled = seq  # every rank saw the same records: every rank raises
            raise NonFiniteError(
                f"{signature.label(seq)}: check_finite: {rank_list(bad)} "
                f"{'has' if len(bad) == 1 else 'have'} NaN or Inf in the input; nothing was "
                "reduced")
        texts = self._texts(rows, signature.text(seq), deadline)
        self._settled = seq
        invalid = np.flatnonzero(statuses == INVALID).tolist()
        if invalid:
            reasons = "; ".join(f"rank {r}: {texts[r]}" for r in invalid)
            verb = "rejected its" if len(invalid) == 1 else "rejected their"
            raise MismatchError(f"{signature.name} #{seq}: {rank_list(invalid)} {verb} "
                                f"arguments, no data moved ({reasons})")
        raise MismatchError(f"{signature.name} #{seq}: ranks disagree, no data moved: "
                            f"{differences([_decode(t) for t in texts])}")


def riding(rows, rank: int):
    """Rank `rank`'s payload in the records' rows (uint8)."""
    length = _HEADER.unpack_from(rows[rank])[3]
    return rows[rank, HEADER_BYTES: HEADER_BYTES + length]


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


def _decode(text: str) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in text.split(_SEP))


# The fields a call takes from the environment where its argument is not given, and the
# collectives that do (None: all).
_ALL_REDUCES = ("allreduce", "allreduce_many")
_FROM_ENVIRONMENT = {"algorithm": ("COLLECTIVES_ALGORITHM", _ALL_REDUCES),
                     "fusion_bytes": ("COLLECTIVES_FUSION_BYTES", _ALL_REDUCES),
                     "deterministic": ("COLLECTIVES_DETERMINISTIC", None)}


def differences(signatures: Sequence[dict[str, str]]) -> str:
    """`rank 2 has shape (1001,), ranks 0-1 have (1000,)` for every field that differs;
    one set by an environment variable where no argument is given names it (for the
    collectives that read it)."""
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
        variable, takers = _FROM_ENVIRONMENT.get(key, (None, None))
        if takers is not None and not any(s.get("collective", takers[0]) in takers
                                          for s in signatures):
            variable = None  # (COLLECTIVES_ALGORITHM does not choose a reduce's algorithm)
        parts.append(", ".join(said) + (f" (the argument, or {variable} where it is not "
                                        "given)" if variable else ""))
    return "; ".join(parts)
