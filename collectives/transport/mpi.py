"""MPI transport over mpi4py: nonblocking byte transfers, bounded waits, MPI's own all-reduce.

Besides the data messages (on the communicator given, one tag per collective) the transport
keeps a private control communicator for the agreement records (`exchange_records`: point
to point, so a timeout names the silent ranks, with every peer's next record receive posted
ahead) and for notices (`tell_peers`: "I gave up on collective #n", "I left after #n"),
which every bounded wait polls for.

After a timeout nothing the caller may reuse stays exposed: `abandon` cancels receives and
keeps every request, with the buffer mpi4py holds for it, alive for the life of the process.

Example::

    t = MPITransport(MPI.COMM_WORLD.Dup())
    t.wait_all([t.isend(x, 1, tag=7)], deadline, "send to rank 1")
"""
from __future__ import annotations

import atexit
import collections
import functools
import os
import threading
import time
from typing import Sequence

import numpy as np
from mpi4py import MPI

import kernels

from ..errors import CollectiveError, CollectiveTimeout, PeerError
from .base import RECORD_CAPACITY, Notice
from .dropped import DroppedSends
from .mpi_receives import ProbedReceive, ProbedReceives
from .polling import BUSY_POLLS, poll

__all__ = ["MPITransport", "as_bytes"]

_MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
_RECORD_TAG, _NOTICE_TAG = 1, 2
_NOTICE_KINDS = ("gave up", "left")
LEAVE_GRACE = 2.0  # seconds close() waits for the other ranks to close too
SWEEP_INTERVAL_S = 1e-3  # the least time between two sweeps of the posted receives


def as_bytes(buf: np.ndarray):
    """mpi4py buffer spec for a 1-D contiguous array of any dtype (bfloat16 included)."""
    return [buf.view(np.uint8), MPI.BYTE]


@functools.cache
def _user_op(dtype: np.dtype, op: str) -> MPI.Op:
    """An MPI op reducing `dtype` elements with our kernels (for types MPI lacks: fp16, bf16;
    float max/min). Declared non-commutative, so MPI combines the ranks' operands in rank
    order and every rank gets the same bits: max(+0.0, -0.0) and NaN payloads depend on
    the operands' order (declared commutative, MPICH's order differed between ranks)."""

    def reduce(inbuf, inoutbuf, datatype):
        src = np.frombuffer(inbuf, dtype=dtype)
        dst = np.frombuffer(inoutbuf, dtype=dtype)
        kernels.reduce_into(dst, src, op)

    return MPI.Op.Create(reduce, commute=False)


@functools.cache
def _element_type(itemsize: int) -> MPI.Datatype:
    return MPI.BYTE.Create_contiguous(itemsize).Commit()


def _reduction(dtype: np.dtype, op: str) -> tuple[MPI.Datatype, MPI.Op, bool]:
    """(MPI datatype, MPI op, whether buffers travel as bytes) for reducing `dtype` with `op`.

    16-bit floats, and float max/min, use a user op over our kernels: MPICH's MAX compares
    with `>`, so a NaN survives or not depending on the order, which differs between ranks.
    """
    found = _REDUCTIONS.get((dtype, op))
    if found is None:
        kind = dtype.kind
        if dtype.itemsize >= 4 and (kind == "i" or (kind == "f" and op == "sum")):
            found = MPI._typedict[dtype.char], _MPI_OPS[op], False
        else:
            found = _element_type(dtype.itemsize), _user_op(dtype, op), True
        _REDUCTIONS[dtype, op] = found
    return found


_REDUCTIONS: dict[tuple[np.dtype, str], tuple[MPI.Datatype, MPI.Op, bool]] = {}


def _same_nans(buf: np.ndarray) -> None:
    """Every NaN of a float sum (`buf`, 1-D) made the default quiet NaN, the same bits on
    every rank.

    MPI's SUM is commutative, so MPICH adds two ranks' values in either order on either
    rank (recursive doubling), and x86 keeps the first NaN operand's sign and payload: two
    NaNs of different payloads gave each rank its own NaN (found by the ninth review).
    Without a NaN this costs a sum of a few elements, or one min (0.9 us at 4 KiB, 1.3 us
    at 64 KiB: three quarters of `isnan(buf).any()`). Not a dot product, which was
    faster: its squares overflow for large finite values (a warning, or under
    `np.seterr(all="raise")` a FloatingPointError that broke the communicator; the
    sixteenth review). Python's float sum and NumPy's min raise nothing.
    """
    probe = sum(buf.tolist()) if buf.size <= 8 else buf.min()  # NaN if an element is
    if probe == probe:  # (the sum also where +inf meets -inf: then nothing changes)
        return
    buf[np.isnan(buf)] = np.nan


def _spec(buf: np.ndarray, datatype: MPI.Datatype, as_bytes_: bool) -> list:
    return [buf.view(np.uint8) if as_bytes_ else buf, datatype]


class _Records:
    """The agreement records over persistent requests: every peer's next record has a
    receive started (double buffered, so the rows of one exchange stay valid while the next
    receives start), and a record's sends are persistent too, one set per record length
    and rows buffer (a training loop's calls repeat a few lengths), sending this rank's
    own row: the record is copied once, into it."""

    _SEND_SETS = 32  # (rows buffer, record length) pairs with persistent sends kept

    def __init__(self, control: MPI.Comm, rank: int, size: int):
        self._control = control
        self._rank = rank
        self._peers = [p for p in range(size) if p != rank]
        self._rows = [np.zeros((size, RECORD_CAPACITY), np.uint8) for _ in range(2)]
        self._recv_sets = [[control.Recv_init([rows[p], MPI.BYTE], p, _RECORD_TAG)
                            for p in self._peers] for rows in self._rows]
        self._own = [memoryview(rows[rank]) for rows in self._rows]
        self._send_sets: dict[tuple[int, int], tuple[list[MPI.Prequest], list]] = {}
        self._turn = 0
        self._recvs = self._start(0)

    def _start(self, turn: int) -> list[MPI.Prequest]:
        """Start the receives of `turn`'s rows; they are the next exchange's."""
        recvs = self._recv_sets[turn]
        if recvs:
            MPI.Prequest.Startall(recvs)
        return recvs

    def _sends(self, turn: int, length: int) -> tuple[list[MPI.Prequest], list]:
        """The persistent sends of this rank's row for a record of `length` bytes, and
        them with the turn's receives (what an exchange waits for)."""
        found = self._send_sets.get((turn, length))
        if found is None:
            if len(self._send_sets) >= self._SEND_SETS:
                for request in self._send_sets.pop(next(iter(self._send_sets)))[0]:
                    request.Free()
            own = self._rows[turn][self._rank, :length]
            sends = [self._control.Send_init([own, MPI.BYTE], p, _RECORD_TAG)
                     for p in self._peers]
            found = self._send_sets[turn, length] = (sends, self._recv_sets[turn] + sends)
        return found

    def exchange(self, transport: "MPITransport", record: np.ndarray, deadline: float,
                 what: str) -> np.ndarray:
        turn = self._turn
        length = record.size
        self._own[turn][:length] = memoryview(record)
        recvs = self._recvs
        sends, requests = self._sends(turn, length)
        if sends:
            MPI.Prequest.Startall(sends)
        testall = MPI.Request.Testall
        for _ in range(BUSY_POLLS):  # a small exchange completes within these
            if testall(requests):
                break
        else:
            self._wait(transport, requests, recvs, sends, deadline, what)
        self._turn = turn ^ 1
        self._recvs = self._start(turn ^ 1)
        return self._rows[turn]

    def _wait(self, transport: "MPITransport", requests, recvs, sends, deadline: float,
              what: str) -> None:
        try:
            transport.poll(lambda: MPI.Request.Testall(requests) or None, deadline, what)
        except (CollectiveTimeout, PeerError) as error:
            silent = self._give_up(transport, sends, recvs)
            if isinstance(error, PeerError):
                raise PeerError(f"{error}; nothing yet from rank(s) {silent} for {what}") from None
            raise CollectiveTimeout(
                f"rank {self._rank}: timed out waiting for {what}: "
                f"nothing from rank(s) {silent or 'none (our sends were not taken)'}"
            ) from None
        except BaseException:
            self._give_up(transport, sends, recvs)
            raise

    def _give_up(self, transport: "MPITransport", sends, recvs) -> list[int]:
        """The records' requests are the transport's for good (no exchange follows; the
        ones still pending cancelled: a completed persistent request cannot be); the
        peers whose record never came."""
        pending = [(p, request) for p, request in zip(self._peers, recvs) if not request.Test()]
        transport.abandon([s for s in sends if not s.Test()], [r for _, r in pending])
        self._recv_sets = [[], []]
        self._send_sets = {}
        self._recvs = []
        return [p for p, _ in pending]

    def cancel(self, transport: "MPITransport") -> None:
        transport.withdraw((), self._recvs)
        self._recvs = []

    def free(self) -> None:
        """Free the persistent requests, all inactive (after `cancel` has settled)."""
        for request in (*self._recv_sets[0], *self._recv_sets[1],
                        *(r for sends, _ in self._send_sets.values() for r in sends)):
            request.Free()
        self._recv_sets, self._send_sets = [[], []], {}


def _settle(requests: list, deadline: float) -> list:
    """Test `requests` until `deadline`; the ones still not complete."""
    while requests:
        requests = [r for r in requests if not _finished(r)]
        if not requests or time.monotonic() > deadline:
            break
        time.sleep(1e-4)
    return requests


def _drain(comm: MPI.Comm, tag: int, count: int, deadline: float) -> tuple[int, list]:
    """Receive and drop the next `count` messages with `tag` from any rank, one at a time
    into one scratch buffer, until `deadline`: (how many were received, the receive still
    under way at the deadline, if any). All at once, each into scratch of its own, held
    gigabytes and ran past the deadline while messages kept coming (the 95th review)."""
    status, scratch = MPI.Status(), np.empty(0, np.uint8)
    for received in range(count):
        while (message := comm.Improbe(MPI.ANY_SOURCE, tag, status)) is None:
            if time.monotonic() > deadline:
                return received, []
            time.sleep(1e-4)
        if time.monotonic() > deadline:  # (also while messages keep coming: the 96th review)
            return received, []
        nbytes = status.Get_count(MPI.BYTE)
        if scratch.size < nbytes:
            scratch = np.empty(nbytes, np.uint8)
        receive = message.Irecv([scratch[:nbytes], MPI.BYTE])  # (the request keeps it)
        if _settle([receive], deadline):
            return received, [receive]
    return count, []


def _finished(request) -> bool:
    """Whether MPI is done with `request`: completed, or failed (a transfer with a process
    that ended)."""
    try:
        return request.Test()
    except MPI.Exception:
        return True


class _Notices:
    """Notices from other ranks (any source, one receive always posted) and our own."""

    def __init__(self, control: MPI.Comm):
        self._control = control
        self._inbox = np.zeros(3, np.int64)  # kind, rank, seq
        self._recv = control.Irecv([self._inbox, MPI.INT64_T], MPI.ANY_SOURCE, _NOTICE_TAG)
        self.heard: dict[int, Notice] = {}
        self.left: dict[int, Notice] = {}  # (a rank that gave up, then left, is heard as
        self._sent: list = []  # giving up: that stops collectives; leaving stops messages)
        self.sent_to: collections.Counter = collections.Counter()  # per peer (drained at
        self.received_from: collections.Counter = collections.Counter()  # close)

    def arrived(self) -> bool:
        """Whether a notice has arrived (cheap: one test of the posted receive; a receive
        found complete tests complete again, so `poll` still takes its notice)."""
        return self._recv is not None and self._recv.Test()

    def poll(self) -> None:
        """Take every notice that has arrived."""
        while self._recv is not None and self._recv.Test():
            self._take()
            self._recv = self._control.Irecv([self._inbox, MPI.INT64_T], MPI.ANY_SOURCE,
                                             _NOTICE_TAG)

    def _take(self) -> None:
        kind, rank, seq = (int(v) for v in self._inbox)
        notice = Notice(rank, _NOTICE_KINDS[kind], seq)
        self.heard.setdefault(rank, notice)
        if notice.kind == "left":
            self.left[rank] = notice
        self.received_from[rank] += 1

    def tell(self, rank: int, size: int, kind: str, seq: int) -> None:
        """Send a notice to every peer, except those that already left."""
        self.poll()
        message = np.array([_NOTICE_KINDS.index(kind), rank, seq], np.int64)
        for peer in range(size):
            notice = self.heard.get(peer)
            if peer != rank and not (notice is not None and notice.kind == "left"):
                self.sent_to[peer] += 1  # (first: an interrupt can only over-count)
                self._sent.append(self._control.Isend([message, MPI.INT64_T], peer, _NOTICE_TAG))

    def cancel(self, transport: "MPITransport") -> None:
        """Take what arrived, withdraw the posted receive (counting a notice it took as it
        was cancelled) and keep the sends alive."""
        if self._recv is not None:
            self.poll()
            recv, self._recv = self._recv, None
            recv.Cancel()
            status = MPI.Status()
            recv.Wait(status)
            if not status.Is_cancelled():
                self._take()
            transport.withdraw(self._sent, ())


class MPITransport:
    """Point-to-point transport over an mpi4py communicator (a private one: init duplicates).

    Construction is collective over `comm` (it duplicates a control communicator).
    """

    name = "mpi"
    shared = None  # no zero-copy capability: see ShmTransport

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._control = comm.Dup()
        self._p2p = comm.Dup()  # point-to-point messages, apart from every collective's
        self._receives = ProbedReceives(self._p2p)
        self._p2p_sent: collections.Counter = collections.Counter()  # per peer (drained at
        self._p2p_sent_lock = threading.Lock()  # close; sends come from any thread)
        self._next_sweep = 0.0  # (monotonic) when an unfinished message may sweep again
        self._records = _Records(self._control, self.rank, self.size)
        self._notices = _Notices(self._control)
        self._seq = 0
        self._abandoned: list = []  # requests given up on, kept alive with their buffers
        self._dropped = DroppedSends(_finished)  # sends nobody waits for, until done
        self._gave_up = False  # on a collective or message: communicators never freed
        self._told_leaving = False
        self._closed = False
        self._pid = os.getpid()  # a forked child's exit does not close the rank's transport
        atexit.register(self.close)

    # ------------------------------------------------------------------ data

    def isend(self, buf: np.ndarray, peer: int, tag: int) -> MPI.Request:
        return self.comm.Isend(as_bytes(buf), peer, tag)

    def irecv(self, buf: np.ndarray, peer: int, tag: int) -> MPI.Request:
        return self.comm.Irecv(as_bytes(buf), peer, tag)

    def wait_all(self, requests: Sequence[MPI.Request], deadline: float, what: str) -> None:
        requests = list(requests)
        try:
            if requests and not MPI.Request.Testall(requests):  # (done at once: no poll)
                self.poll(lambda: MPI.Request.Testall(requests) or None, deadline, what)
        except MPI.Exception as error:
            raise self._failed(error, what) from None

    def wait_any(self, requests: list[MPI.Request], deadline: float, what: str) -> int:
        def test():
            index, done = MPI.Request.Testany(requests)
            return index if done and index != MPI.UNDEFINED else None

        try:
            index = test()  # (done at once: no poll to set up)
            return self.poll(test, deadline, what) if index is None else index
        except MPI.Exception as error:
            raise self._failed(error, what) from None

    def _failed(self, error: MPI.Exception, what: str) -> CollectiveError:
        """The library's error for an MPI error while waiting for `what`: PeerError where a
        notice names the rank that gave up or left (after which MPI may fail a transfer with
        it, such as a single-copy read from a process that ended), else CollectiveError."""
        lines = [line.strip() for line in error.Get_error_string().splitlines() if line.strip()]
        cause = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"  # (its stack)
        text = f"MPI failed waiting for {what}: {cause}"
        try:
            self.check_peers()
        except PeerError as told:
            return PeerError(f"{told}; {text}")
        except MPI.Exception:
            pass
        return CollectiveError(f"rank {self.rank}: {text} (a peer may have ended)")

    @property
    def gave_up(self) -> bool:
        """Whether a collective or message was given up on, or this rank left without the
        others (then no communicator of this transport is freed: a message for it may
        still arrive, and a communicator made later would take it for its own)."""
        return self._gave_up

    def abandon(self, sends: Sequence[MPI.Request], receives: Sequence[MPI.Request]) -> None:
        """Requests of a collective or message given up on: withdrawn (`gave_up`)."""
        self.withdraw(sends, receives)
        self._gave_up = True

    def withdraw(self, sends: Sequence[MPI.Request], receives: Sequence[MPI.Request]) -> None:
        """Cancel `receives` and keep every request alive with its buffer (as leaving
        withdraws the control receives it posted ahead)."""
        for request in receives:
            if request is not None and request != MPI.REQUEST_NULL:
                try:
                    request.Cancel()
                except MPI.Exception:  # a persistent receive that completed (inactive: an
                    pass  # interrupt after the records came; the seventy-first review)
        self._abandoned.extend(r for r in (*sends, *receives) if r is not None)

    def native_allreduce(self, src: np.ndarray, dst: np.ndarray, op: str, deadline: float) -> None:
        """MPI's all-reduce of `src` into `dst`; `src is dst` reduces in place."""
        datatype, mpi_op, raw = _reduction(dst.dtype, op)
        if raw:
            send = MPI.IN_PLACE if src is dst else [src.view(np.uint8), datatype]
            recv = [dst.view(np.uint8), datatype]
        else:
            send = MPI.IN_PLACE if src is dst else [src, datatype]
            recv = [dst, datatype]
        self._complete(self.comm.Iallreduce(send, recv, mpi_op), deadline,
                       "native MPI all-reduce")
        if not raw and dst.dtype.kind == "f":
            _same_nans(dst)

    def native_reduce_scatter(self, src: np.ndarray, dst: np.ndarray, counts: Sequence[int],
                              op: str, deadline: float) -> None:
        """MPI's reduce-scatter: dst (counts[rank] elements) = this rank's block of the
        reduction of src, blocks of `counts` elements in rank order."""
        datatype, mpi_op, raw = _reduction(src.dtype, op)
        self._complete(self.comm.Ireduce_scatter(_spec(src, datatype, raw),
                                                 _spec(dst, datatype, raw), list(counts), mpi_op),
                       deadline, "native MPI reduce-scatter")

    def native_allgather(self, src: np.ndarray, dst: np.ndarray, deadline: float) -> None:
        """MPI's all-gather: dst (size * src.size elements) = every rank's src, in rank order."""
        self._complete(self.comm.Iallgather(as_bytes(src), as_bytes(dst)), deadline,
                       "native MPI all-gather")

    def native_broadcast(self, buf: np.ndarray, root: int, deadline: float) -> None:
        """MPI's broadcast of root's `buf` into every rank's `buf`."""
        self._complete(self.comm.Ibcast(as_bytes(buf), root), deadline, "native MPI broadcast")

    def native_reduce(self, src: np.ndarray, dst: np.ndarray | None, op: str, root: int,
                      deadline: float) -> None:
        """MPI's reduce of src onto root's `dst` (None on the other ranks)."""
        datatype, mpi_op, raw = _reduction(src.dtype, op)
        recv = None if dst is None else _spec(dst, datatype, raw)
        self._complete(self.comm.Ireduce(_spec(src, datatype, raw), recv, mpi_op, root),
                       deadline, "native MPI reduce")

    def native_alltoall(self, src: np.ndarray, dst: np.ndarray, deadline: float) -> None:
        """MPI's all-to-all: block r of src goes to rank r, block q of dst comes from rank q."""
        self._complete(self.comm.Ialltoall(as_bytes(src), as_bytes(dst)), deadline,
                       "native MPI all-to-all")

    def _complete(self, request: MPI.Request, deadline: float, what: str) -> None:
        """Wait for a nonblocking collective; on failure keep it alive (none can be cancelled).
        The first polls spin right here: a small collective completes within them. It also
        completes with a peer that gave up on it (that peer's request lives on): the notices
        are checked before anyone uses the result."""
        test = request.Test
        try:
            for _ in range(BUSY_POLLS):
                if test():
                    break
            else:
                self.poll(lambda: test() or None, deadline, what)
        except BaseException as error:
            self.abandon([request], ())
            if isinstance(error, MPI.Exception):
                raise self._failed(error, what) from None
            raise
        if self._notices.arrived():  # (those heard before were checked as it began)
            self.check_peers()

    # ------------------------------------------------------------------ point to point

    def p2p_send(self, buf: np.ndarray, peer: int, tag: int) -> MPI.Request:
        """A send; to this rank itself, of a copy (a receive into the same or overlapping
        memory aborted the process in MPICH's memcpy at size 1; the eighty-second review)."""
        self._dropped.tidy()
        with self._p2p_sent_lock:  # (close counts under it: a send from another thread as
            if self._closed:  # it closed went uncounted, undrained, into the next
                raise CollectiveError(f"rank {self.rank}: send to rank {peer}: this "
                                      "communicator is closed")  # communicator: 89th review)
            self._p2p_sent[peer] += 1  # counted first: an interrupt after the Isend left it
            try:  # uncounted; an over-count (an interrupt) only keeps the communicators
                return self._p2p.Isend(as_bytes(buf.copy() if peer == self.rank else buf),
                                       peer, tag)
            except MPI.Exception:  # (not sent)
                self._p2p_sent[peer] -= 1
                raise

    def p2p_recv(self, buf: np.ndarray, peer: int, tag: int) -> ProbedReceive:
        """A receive that takes its message only if it has buf's size (mpi_receives)."""
        return self._receives.post(buf.view(np.uint8), peer, tag)

    def p2p_drop(self, request, send: bool) -> None:
        """A message nobody will wait for: kept alive with its buffer. A send is kept until
        it is done (`DroppedSends`), a receive is withdrawn (cancelled: a message that comes
        for it is the next receive's of its peer and tag, or close() drains it); close()
        settles both and frees the communicators (each dropped message kept them for good:
        680 init/close cycles exhausted MPICH's; the eighty-second review)."""
        if send:
            self._dropped.add(request)
        else:
            self.withdraw((), [request])

    def _sweep_receives(self) -> None:
        """Take the messages of every posted receive that has one: a peer's large send to
        one of them waits for it, and may be what this rank waits for. One sweep probes
        every pending channel, so it runs at most every SWEEP_INTERVAL_S and at most a
        quarter of the time (with 2000 receives posted ahead, a sweep on every poll made a
        small round trip 100x slower: the forty-second review)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._receives.progress()
        spent = time.monotonic() - now
        self._next_sweep = now + spent + max(SWEEP_INTERVAL_S, 3 * spent)

    def p2p_test(self, request, what: str) -> bool:
        """Whether a p2p send or receive completed; CollectiveError if it failed (a received
        message of another size than the buffer fails, the buffer untouched). After close
        a send MPI completed before still completes; anything else fails as closed, a
        receive whose message had arrived but was not waited or tested before too."""
        self._dropped.tidy()
        try:
            if isinstance(request, ProbedReceive):
                done = self._receives.test(request, what)
            else:
                done = request.Test()
            if not done and not self._closed:
                self._sweep_receives()
        except MPI.Exception as error:  # (a receive unmatched at close probes a freed comm)
            reason = error.Get_error_string().splitlines()[-1].strip()
            done = None
        if not done and self._closed:
            raise self._closed_before(request, what)
        if done is None:
            raise CollectiveError(f"{what} failed: {reason}")
        return done

    def _closed_before(self, request, what: str) -> CollectiveError:
        """The error for a message the communicator closed before it completed. One MPI
        still holds is kept with its buffer, and may still complete: a send pending at a
        close nobody met was said to have failed, yet delivered later from x as it then
        was, or from freed and reused memory (the 113th review)."""
        closed = f"{what} failed: the communicator was closed before it completed"
        live = request.request if isinstance(request, ProbedReceive) else request
        if live is None or live == MPI.REQUEST_NULL:  # (a receive MPI never had)
            return CollectiveError(closed)
        if not any(live is kept for kept in self._abandoned):
            self._abandoned.append(live)
        if isinstance(request, ProbedReceive):
            return CollectiveError(f"{closed}; a message already arriving may still land in "
                                   "out (a transfer under way cannot be withdrawn): do not "
                                   "reuse out for another message")
        return CollectiveError(f"{closed}; the message may still be delivered, from x as it "
                               "is then (a send cannot be withdrawn): leave x unchanged")

    def p2p_peer_left(self, peer: int) -> Notice | None:
        notices = self._notices
        if notices.arrived():
            notices.poll()
        return notices.left.get(peer)

    # ------------------------------------------------------------------ control

    def exchange_records(self, record: np.ndarray, deadline: float, what: str) -> np.ndarray:
        """Every rank's record as rows (see HostTransport.exchange_records)."""
        if record.size > RECORD_CAPACITY:
            raise ValueError(f"a record holds at most {RECORD_CAPACITY} bytes, got {record.size}")
        return self._records.exchange(self, record, deadline, what)

    def begin(self, seq: int) -> None:
        self._seq = seq
        self._dropped.tidy()
        notices = self._notices
        if notices.heard or notices.arrived():
            self.check_peers()

    def check_peers(self) -> None:
        """PeerError if a notice says a peer will not take part in the current collective."""
        notices = self._notices
        notices.poll()
        for notice in notices.heard.values():
            if notice.stops(self._seq):
                raise PeerError(f"rank {self.rank}: {notice}")

    def tell_peers(self, kind: str, seq: int) -> None:
        if kind == "gave up":  # (also where nothing was pending here: a peer's data may
            self._gave_up = True  # be on its way, sent before it heard)
        if not self._closed:
            self._notices.tell(self.rank, self.size, kind, seq)

    def node_keys(self) -> list[int]:
        """Per rank, the lowest rank of its shared-memory node (MPI's shared-memory split)."""
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        leader = node.allreduce(self.rank, op=MPI.MIN)
        node.Free()
        return self.comm.allgather(leader)

    def allgather_object(self, obj: object) -> list:
        return self.comm.allgather(obj)

    def barrier(self, deadline: float) -> None:
        request = self.comm.Ibarrier()
        try:
            self.poll(lambda: request.Test() or None, deadline, "the barrier")
        except BaseException:
            self.abandon([request], ())
            raise

    def abort(self, errorcode: int) -> None:
        """End every rank of the job now (MPI_Abort; after `close` freed the communicator,
        on COMM_WORLD, which ends the job alike; after MPI_Finalize, this process)."""
        if MPI.Is_finalized():
            os._exit(errorcode)
        comm = self.comm if self.comm != MPI.COMM_NULL else MPI.COMM_WORLD
        comm.Abort(errorcode)

    def close(self) -> None:
        """Leave: withdraw the posted control receives and free the communicators (once;
        also at exit).

        The ranks first meet, bounded by LEAVE_GRACE seconds, in an all-to-all of how many
        messages and notices each sent to each (a barrier that also says what to drain,
        `_release`). When they all close together nothing more is needed; otherwise this
        rank tells the others it left (they are still running: a collective that waits for
        it raises PeerError), and keeps its communicators (`gave_up`: that notice may reach
        nobody now, and a later communicator with the freed context id took it; the
        seventy-fourth review). A request that cannot be completed keeps its communicator,
        left to MPI_Finalize. An interrupt (Ctrl-C) in the meeting still tells the others,
        then is raised. In a forked child, which is not the rank, nothing is done.
        """
        if self._closed or MPI.Is_finalized() or os.getpid() != self._pid:
            return
        with self._p2p_sent_lock:
            self._closed = True
            sent = np.array([[self._p2p_sent[q], self._notices.sent_to[q]]
                             for q in range(self.size)], np.int64)
        atexit.unregister(self.close)
        due = np.empty_like(sent)  # (kept alive by the request, as its buffers)
        meeting = [self._control.Ialltoall([sent, MPI.INT64_T], [due, MPI.INT64_T])]
        try:
            meeting = _settle(meeting, time.monotonic() + LEAVE_GRACE)
        finally:
            if meeting:  # (a notice the others may never take: kept, as `gave_up` says)
                self._gave_up = True
                self.tell_leaving()
                self._abandoned += meeting
            self._release(due=None if meeting else due)

    def tell_leaving(self) -> None:
        """Tell the other ranks, once, that this rank left after its last collective: their
        waits for it raise PeerError. (`close` does when the others do not close with it;
        the shared-memory transport, whose close waits longer, as that wait begins.)"""
        if not self._told_leaving:
            self._told_leaving = True
            self._notices.tell(self.rank, self.size, "left", self._seq)

    def _release(self, *, due: np.ndarray | None = None) -> None:
        """Withdraw the posted receives and free the communicators, unless a collective was
        given up on: a peer's message for it (an eager send is not cancellable) may still
        arrive, and a communicator made later got the freed one's context id back and took
        it for one of its own: every later communicator's call of that number returned
        wrong sums, and left its own message behind for the next (the seventieth review).
        MPI_Finalize frees those kept. `due` (every rank is closing): per rank, how many
        messages and notices it sent to this one; first this rank takes those it never
        received (`_drained`)."""
        self._records.cancel(self)
        self._notices.cancel(self)
        deadline = time.monotonic() + LEAVE_GRACE
        if due is not None and not self._drained(due, deadline):
            self._gave_up = True
        # The others drain what this rank sent them meanwhile: its dropped sends complete
        # as they do (0.1 s left a large one in flight, and the communicators kept; the
        # ninety-third review), by the same deadline.
        if due is None or self._gave_up:
            deadline = time.monotonic() + 0.1
        self._abandoned = _settle(self._abandoned + self._dropped.take(), deadline)
        if not self._abandoned and not self._gave_up:
            self._records.free()
            self._control.Free()
            self._p2p.Free()
            self.comm.Free()

    def _drained(self, due: np.ndarray, deadline: float) -> bool:
        """Whether every point-to-point message and notice sent to this rank (`due[q]`: how
        many rank q sent) was taken by `deadline`: those it never received are received
        now and dropped. One left in a freed communicator was the next communicator's: a
        send nobody received (fire and forget, or waited by its sender) came out of a later
        receive of its tag, a notice of leaving made a later collective raise PeerError
        (the eighty-sixth review)."""
        taken = (self._receives.taken, self._notices.received_from)
        unreceived = [sum(max(int(due[q, k]) - taken[k][q], 0) for q in range(self.size))
                      for k in range(2)]
        drained = [_drain(self._p2p, MPI.ANY_TAG, unreceived[0], deadline),
                   _drain(self._control, _NOTICE_TAG, unreceived[1], deadline)]
        self._abandoned += [request for _, late in drained for request in late]
        return all(received == count for (received, _), count in zip(drained, unreceived))

    def poll(self, test, deadline: float, what: str, *, notices: bool = True):
        """`test()`'s first result other than None; CollectiveTimeout naming `what` past
        `deadline`; PeerError as soon as a peer's notice says it will not take part (unless
        `notices` is False: waits outside any collective, such as closing). An MPI error
        in `test` is the library's (`_failed`)."""
        def meanwhile() -> None:
            # A receive posted ahead may be what a peer's large send, and so the peer's part
            # in this wait, waits for: MPI gets it only once probed (a rank receiving
            # while in a collective timed out with its sender; the 113th review).
            if not self._closed:
                self._sweep_receives()
            if notices:
                self.check_peers()

        try:
            return poll(test, deadline,
                        lambda: CollectiveTimeout(f"rank {self.rank}: timed out waiting for "
                                                  f"{what}"),
                        interrupt=meanwhile)
        except MPI.Exception as error:
            raise self._failed(error, what) from None

    def __repr__(self) -> str:
        return f"MPITransport(rank={self.rank}, size={self.size})"
