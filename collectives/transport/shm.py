"""Shared-memory transport: ranks on one node exchange through MPI-3 shared windows, zero-copy.

Every rank of a node exposes two MPI-3 shared-memory windows (`MPI.Win.Allocate_shared` over
the node communicator):

- a *data* window: the collective's work buffer lives there (`work_buffer`), so a send of a
  region of it costs nothing: the sender publishes "bytes [offset, offset+n) are ready" and
  the receiver reads them where they lie, copying them into its own buffer (`irecv`) or
  reducing straight from them (`irecv_view` + `release`);
- a small *control* window: per ordered pair of local ranks a ring of SLOTS descriptors
  (seq, offset, nbytes, tag) written by the sender, and SLOTS acknowledgements written by
  the receiver. Message m of a pair uses slot m % SLOTS; it is published by writing seq = m+1
  last, and acknowledged by the receiver writing m+1 into its ack slot once it no longer
  reads the sender's bytes. A send completes on that acknowledgement, so the sender never
  overwrites a region a peer may still be reading. Two more words per rank say which peer's
  stream it found out of step (see below), so the ranks waiting on it stop at once too.

Memory ordering: both windows stay in a passive-target epoch (`Lock_all(MODE_NOCHECK)`) and
`Win.Sync` is the fence (MPI's unified model): sender `write data; Sync; write descriptor`,
receiver `read seq; Sync; read data; Sync; write ack`.

A send whose buffer is not in the data window (a codec's staging buffer, say) still goes
through MPI, with a descriptor of offset -1 that keeps the pair's order. Such messages
travel on a private duplicate of the node communicator, each tagged with its own per-pair
sequence number (mod MPI_TAG_UB + 1), and the Isend is posted only when its descriptor is
published, so at most SLOTS of them per pair are ever unmatched: the receive posted for
message m can only match message m, whatever else is in flight (the collective's tag, the
order receives are posted in). A receive whose descriptor disagrees with it (tag or size:
the ranks are out of step) raises MismatchError naming both ranks, marks the stream in the
control window, and every rank waiting on this one raises too; the transport then refuses
further exchanges. Peers on other nodes use MPI directly. Waits poll, yield the core
(`os.sched_yield`) and honour the deadline.

Example::

    t = ShmTransport(MPITransport(MPI.COMM_WORLD.Dup()))
    work = t.work_buffer(n, np.float32)        # None when no peer shares the node
    req = t.irecv_view(scratch, peer, tag)     # t.view(req) after it completes, then t.release(req)
"""
from __future__ import annotations

import atexit
import collections
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from mpi4py import MPI

import kernels

from ..errors import CollectiveError, CollectiveTimeout, MismatchError, PeerError
from .delegate import LeftToMPI
from .mpi import LEAVE_GRACE, MPITransport, as_bytes

__all__ = ["SLOTS", "ShmTransport"]

SLOTS = 64  # descriptors in flight per ordered pair of ranks on a node
_SEQ, _OFFSET, _NBYTES, _TAG = range(4)
# Per rank in the control window: local rank + 1 of a stream found out of step and its
# message; the node meetings the rank arrived at and was ready to pass (_node_barrier),
# what it met for (_GROW, _CLOSE), 1 once it gave up on one (it meets no more).
_FAULT_PEER, _FAULT_SEQ, _ARRIVED, _READY, _PURPOSE, _GAVE_UP, _WORDS = range(7)
_GROW, _CLOSE = 1, 2
_PURPOSES = {_GROW: "grow the shared windows", _CLOSE: "close"}
_GROW_QUANTUM = 1 << 20  # data windows grow in whole MiB, by at least 1/8 of their size
CLOSE_GRACE = 30.0  # seconds close() waits for the node's other ranks before freeing


@dataclass(eq=False, slots=True)
class _Send:
    peer: int  # node-local rank
    seq: int
    offset: int  # in my data window; -1: sent through MPI
    nbytes: int
    tag: int
    buf: np.ndarray | None = None  # sent through MPI once published
    mpi: MPI.Request | None = None
    published: bool = False


@dataclass(eq=False, slots=True)
class _Recv:
    peer: int  # node-local rank, -1 off-node
    seq: int
    buf: np.ndarray
    tag: int
    view: bool
    payload: np.ndarray | None = None  # set when the data can be read
    mpi: MPI.Request | None = None
    unacked: bool = False  # the sender's bytes are still being read


class ShmTransport(LeftToMPI):
    """MPITransport with zero-copy shared-memory exchange among the ranks of a node.

    Its `shared` capability (base.SharedWork) is itself; control traffic, off-node messages
    and the native all-reduce are the MPITransport's.
    """

    name = "mpi+shm"

    def __init__(self, mpi: MPITransport, *, close_grace: float = CLOSE_GRACE):
        self.mpi = mpi
        self.shared = self
        self.rank, self.size = mpi.rank, mpi.size
        self.node = mpi.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.node_ranks: list[int] = self.node.allgather(self.rank)  # global rank per local rank
        self.local = {g: i for i, g in enumerate(self.node_ranks)}
        self.me = self.node.Get_rank()
        self._close_grace = close_grace
        n = len(self.local)
        # On-node messages that go through MPI: apart from everything else, one tag each.
        self._wire = self.node.Dup()
        self._wire_tags = int(self._wire.Get_attr(MPI.TAG_UB)) + 1
        assert self._wire_tags > SLOTS
        descriptors, acks = n * SLOTS * 4, n * SLOTS
        self._ctrl_win, segments = _allocate(self.node, 8 * (descriptors + acks + _WORDS))
        ctrl = [s.view(np.int64) for s in segments]
        ctrl[self.me][:] = 0
        self._ctrl_win.Sync()
        self.node.Barrier()
        ack_end = descriptors + acks
        self._outbox = [c[:descriptors].reshape(n, SLOTS, 4) for c in ctrl]  # [owner][to][slot]
        self._acks = [c[descriptors:ack_end].reshape(n, SLOTS) for c in ctrl]  # [owner][from][slot]
        self._faults = [c[ack_end:] for c in ctrl]  # [owner]: _FAULT_PEER, ... _GAVE_UP
        self._data_win: MPI.Win | None = None
        self._data: list[np.ndarray] = []
        self._sent = [0] * n  # messages posted to each local peer
        self._received = [0] * n  # receives posted from each local peer
        self._unpublished = [collections.deque() for _ in range(n)]  # per peer, in order
        self._queued = 0  # sends waiting in _unpublished
        self._unmatched: list[_Recv] = []
        self._failed: CollectiveError | None = None  # why the exchange cannot continue
        self._closed = False
        self._pid = os.getpid()  # a forked child's exit does not close the rank's transport
        atexit.register(self.close)

    # ------------------------------------------------------------------ buffers

    def work_buffer(self, count: int, dtype, *, deadline: float) -> np.ndarray | None:
        """`count` elements of `dtype` in this rank's data window, or None without node peers.

        Collective over the node when the window must grow (every rank of a node asks for the
        same size at the same collective). The contents are left as they were.
        """
        if len(self.local) == 1:
            return None
        self._refuse_if_failed()
        nbytes = count * np.dtype(dtype).itemsize
        if self._data_win is None or self._data[self.me].size < nbytes:
            self._grow(nbytes, deadline)
        return self._data[self.me][:nbytes].view(dtype)

    def _grow(self, nbytes: int, deadline: float) -> None:
        assert not (self._queued or self._unmatched), "window grown with messages in flight"
        quantum = max(_GROW_QUANTUM, (self._data[self.me].size // 8) if self._data else 0)
        capacity = -(-max(nbytes, 1) // quantum) * quantum
        self._node_barrier(deadline, _GROW)
        # An interrupt as these calls return leaves this rank without the window the others
        # hold; a close freeing unlike windows hung every rank (the seventy-first review).
        try:
            if self._data_win is not None:
                self._data_win.Unlock_all()
                self._data_win.Free()
            self._data_win, self._data = _allocate(self.node, capacity)
        except BaseException as error:
            self._give_up_meetings()
            self._failed = self._unusable(
                f"growing the shared windows ended ({type(error).__name__})")
            raise

    # ------------------------------------------------------------------ point to point

    def isend(self, buf: np.ndarray, peer: int, tag: int):
        local = self.local.get(peer)
        if local is None:
            return self.mpi.isend(buf, peer, tag)
        self._refuse_if_failed()
        offset = self._offset_of(buf)
        self._sent[local] += 1
        send = _Send(local, self._sent[local], offset, buf.nbytes, tag, buf if offset < 0 else None)
        self._unpublished[local].append(send)
        self._queued += 1
        self._publish()
        return send

    def irecv(self, buf: np.ndarray, peer: int, tag: int):
        """Receive into `buf` (copied from the peer's window when the peer shares the node)."""
        return self._irecv(buf, peer, tag, view=False)

    def irecv_view(self, buf: np.ndarray, peer: int, tag: int):
        """Like irecv, but once complete `view(req)` may be the peer's bytes where they lie.

        Read it, then `release(req)`: until then the peer's send does not complete.
        """
        return self._irecv(buf, peer, tag, view=True)

    def view(self, request) -> np.ndarray:
        """The received elements of a completed irecv_view request (`buf` or the peer's)."""
        return request.payload

    def release(self, request) -> None:
        """Done reading a view: acknowledge, so the peer may reuse its region."""
        if request.unacked:
            self._ack(request)

    def _irecv(self, buf: np.ndarray, peer: int, tag: int, view: bool) -> _Recv:
        local = self.local.get(peer)
        if local is None:
            return _Recv(-1, 0, buf, tag, view, payload=buf, mpi=self.mpi.irecv(buf, peer, tag))
        self._refuse_if_failed()
        self._received[local] += 1
        recv = _Recv(local, self._received[local], buf, tag, view)
        self._unmatched.append(recv)
        self._match()
        return recv

    # ------------------------------------------------------------------ waits

    def wait_all(self, requests: Sequence, deadline: float, what: str) -> None:
        requests = [r for r in requests if r is not None]
        if requests:
            self._wait(lambda: all(map(self._done, requests)) or None, requests, deadline, what)

    def wait_any(self, requests: list, deadline: float, what: str) -> int:
        def test():
            for i, request in enumerate(requests):
                if request is not None and self._done(request):
                    return i
            return None

        return self._wait(test, requests, deadline, what)

    def _wait(self, test, requests, deadline: float, what: str):
        self._refuse_if_failed()
        peers = {r.peer for r in requests if isinstance(r, (_Send, _Recv)) and r.peer >= 0}

        def step():
            self._check_faults(peers)
            self._publish()
            self._match()
            return test()

        try:
            return self.mpi.poll(step, deadline, what)
        except CollectiveTimeout:
            late = [r for r in requests if r is not None and not self._done(r)]
            ours = [r for r in late if isinstance(r, (_Send, _Recv))]
            peers = sorted({self.node_ranks[r.peer] for r in ours if r.peer >= 0})
            off_node = len(ours) < len(late) or any(r.peer < 0 for r in ours)
            raise CollectiveTimeout(
                f"rank {self.rank}: timed out waiting for {what}; no answer from node rank(s) "
                f"{peers}{' and off-node rank(s)' if off_node else ''}"
            ) from None

    def _done(self, request) -> bool:
        if isinstance(request, _Recv):
            return request.payload is not None and (request.mpi is None or request.mpi.Test())
        if isinstance(request, _Send):
            if not request.published:
                return False
            if request.mpi is not None:
                return request.mpi.Test()
            return self._acks[request.peer][self.me, _slot(request.seq)] >= request.seq
        return request.Test()

    # ------------------------------------------------------------------ progress

    def _publish(self) -> None:
        """Write the descriptors of posted sends whose slot the receiver has freed, in order.

        A send through MPI is posted here, with its descriptor: so at most SLOTS per pair are
        in flight unmatched, and their tags (sequence numbers mod MPI_TAG_UB + 1) differ.
        """
        if not self._queued:
            return
        for peer, queue in enumerate(self._unpublished):
            while queue:
                send = queue[0]
                slot = _slot(send.seq)
                if send.seq > SLOTS and self._acks[peer][self.me, slot] < send.seq - SLOTS:
                    break  # the receiver still reads message seq - SLOTS's slot
                if send.buf is not None:
                    send.mpi = self._wire.Isend(as_bytes(send.buf), peer, self._wire_tag(send.seq))
                    send.buf = None
                entry = self._outbox[self.me][peer, slot]
                entry[_OFFSET], entry[_NBYTES], entry[_TAG] = send.offset, send.nbytes, send.tag
                self._ctrl_win.Sync()  # data and descriptor before seq
                entry[_SEQ] = send.seq
                send.published = True
                queue.popleft()
                self._queued -= 1

    def _match(self) -> None:
        """Take the published messages that posted receives wait for, in order per peer.

        A peer's messages are taken strictly in sequence (the sender may publish more while
        we scan). A message sent through MPI is received by its own tag (its sequence number),
        so MPI's matching does not depend on that order, nor on other messages in flight.
        """
        still = []
        blocked: set[int] = set()
        for i, recv in enumerate(self._unmatched):
            entry = self._outbox[recv.peer][self.me, _slot(recv.seq)]
            if recv.peer in blocked or entry[_SEQ] != recv.seq:
                blocked.add(recv.peer)
                still.append(recv)
                continue
            self._ctrl_win.Sync()  # seq before descriptor and data
            offset, nbytes, tag = (int(v) for v in entry[1:])
            if tag != recv.tag or nbytes != recv.buf.nbytes:
                self._unmatched = still + self._unmatched[i:]  # nothing taken twice
                raise self._out_of_step(recv, tag, nbytes)
            if offset < 0:
                wire_tag = self._wire_tag(recv.seq)  # matches the peer's message recv.seq only
                recv.mpi = self._wire.Irecv(as_bytes(recv.buf), recv.peer, wire_tag)
                recv.payload = recv.buf
                self._ack(recv)
                continue
            source = self._data[recv.peer][offset : offset + nbytes].view(recv.buf.dtype)
            if recv.view:
                recv.payload, recv.unacked = source, True
            else:
                kernels.copy_into(recv.buf, source)
                recv.payload = recv.buf
                self._ack(recv)
        self._unmatched = still

    def _refuse_if_failed(self) -> None:
        """Once some stream was found out of step (MismatchError), or a meeting of the node's
        ranks failed, the exchange cannot go on: that error again."""
        if self._failed is not None:
            raise type(self._failed)(str(self._failed))

    def _wire_tag(self, seq: int) -> int:
        """The MPI tag of a pair's message `seq` sent through MPI (unique among those in flight)."""
        return seq % self._wire_tags

    def _out_of_step(self, recv: _Recv, tag: int, nbytes: int) -> MismatchError:
        """Mark the stream from recv's peer out of step (for the ranks waiting on us); the error."""
        source = self.node_ranks[recv.peer]
        faults = self._faults[self.me]
        if not faults[_FAULT_PEER]:
            faults[_FAULT_SEQ] = recv.seq
            self._ctrl_win.Sync()
            faults[_FAULT_PEER] = recv.peer + 1
        self._failed = MismatchError(
            f"rank {self.rank}: message {recv.seq} from rank {source} has tag {tag} and "
            f"{nbytes} bytes, but rank {self.rank} expected tag {recv.tag} and "
            f"{recv.buf.nbytes} bytes: ranks {source} and {self.rank} are out of step (they "
            "disagree on the collectives' arguments or order); the shared-memory exchange "
            "cannot continue, call comm.abort()"
        )
        return self._failed

    def _check_faults(self, peers) -> None:
        """MismatchError if a peer we wait on found some stream out of step (it stopped)."""
        for peer in peers:
            faults = self._faults[peer]
            if faults[_FAULT_PEER]:
                self._ctrl_win.Sync()
                source = self.node_ranks[int(faults[_FAULT_PEER]) - 1]
                self._failed = MismatchError(
                    f"rank {self.rank}: rank {self.node_ranks[peer]} found message "
                    f"{int(faults[_FAULT_SEQ])} from rank {source} out of step with its receives "
                    "(ranks disagree on the collectives' arguments or order); the shared-memory "
                    "exchange cannot continue, call comm.abort()"
                )
                raise self._failed

    def _ack(self, recv: _Recv) -> None:
        self._ctrl_win.Sync()  # reads of the peer's bytes before the acknowledgement
        self._acks[self.me][recv.peer, _slot(recv.seq)] = recv.seq
        recv.unacked = False

    def _offset_of(self, buf: np.ndarray) -> int:
        """Offset of `buf` in this rank's data window, -1 if it lies elsewhere."""
        if self._data_win is None:
            return -1
        mine = self._data[self.me]
        start = buf.__array_interface__["data"][0] - mine.__array_interface__["data"][0]
        return start if 0 <= start and start + buf.nbytes <= mine.size else -1

    # ------------------------------------------------------------------ MPI's part

    def abandon(self, sends: Sequence, receives: Sequence) -> None:
        """On-node messages need nothing (this rank copies them itself); MPI's are abandoned."""
        self.mpi.abandon([s.mpi for s in sends if isinstance(s, _Send) and s.mpi] +
                         [s for s in sends if not isinstance(s, _Send)],
                         [r.mpi for r in receives if isinstance(r, _Recv) and r.mpi] +
                         [r for r in receives if not isinstance(r, _Recv)])

    def close(self) -> None:
        """Free the windows once every rank of the node closes (or give up after a grace
        period), then close the MPI transport.

        Safe to call twice and at exit (in a forked child: nothing). MPI_Win_free is
        collective, so the ranks first meet (`_node_barrier`: every rank passes or none
        does); where they do not, or a rank gave up on an earlier meeting, the windows are
        left to MPI_Finalize instead of hanging. Once the others have not come for
        LEAVE_GRACE, they are told this rank left, as the MPI transport tells them (they
        waited out the whole grace period, 30 s, or their timeout, which named nobody;
        the eighty-third review).
        """
        if self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        atexit.unregister(self.close)
        if MPI.Is_finalized():
            return
        try:
            if not self._faults[self.me][_GAVE_UP]:
                self._node_barrier(time.monotonic() + self._close_grace, _CLOSE, notices=False,
                                   alone=(LEAVE_GRACE, self.mpi.tell_leaving))
                self._free_windows()
        except CollectiveError:
            pass
        finally:
            self.mpi.close()

    def _free_windows(self) -> None:
        for win in (self._data_win, self._ctrl_win):
            if win is not None:
                win.Unlock_all()
                win.Free()
        self._data_win = None
        if not self.mpi.gave_up:  # (the wire's messages, as the MPI transport's)
            self._wire.Free()
        self.node.Free()

    def _node_barrier(self, deadline: float, purpose: int, *, notices: bool = True,
                      alone: tuple[float, Callable[[], None]] | None = None) -> None:
        """Every rank of the node meets, before a blocking collective call (the windows'
        allocation, _GROW, or free, _CLOSE): either every rank passes, or none does and
        each raises (short of what docs/shared-memory.md, "Meetings", leaves: a rank that
        stops or is interrupted once it was ready).

        Two steps through the control window. A rank arrives and waits, bounded by
        `deadline`, until every rank has arrived, for the same purpose (MismatchError
        otherwise: one rank grows, another closes); then it is ready, and passes once every
        rank is. A rank that gives up while arriving (timeout, a peer's notice, an
        interrupt) says so (_GAVE_UP) and never becomes ready, so no rank passes that
        meeting, and the ranks still in it raise at once. A timeout names the ranks that
        had not arrived. A rank that gave up meets no more: its exchange refuses and its
        close leaves the windows to MPI_Finalize (the communicator is unusable after the
        error; comm.abort()). An MPI barrier could not do this: one abandoned stays posted
        and meets a later rank's, which then went on into a collective call alone and hung.
        `alone=(seconds, call)`: `call()` once the others have not all arrived in `seconds`.
        """
        what = f"the node's ranks to {_PURPOSES[purpose]}"
        mine = self._faults[self.me]
        meeting = int(mine[_ARRIVED]) + 1
        after, call = alone if alone is not None else (float("inf"), None)
        after += time.monotonic()

        def arrived() -> bool | None:
            nonlocal call
            everyone = self._everyone(_ARRIVED, meeting, what)
            if everyone is None and call is not None and time.monotonic() > after:
                call, told = None, call
                told()
            return everyone

        try:  # (from the first write: an interrupt anywhere here is a rank giving up)
            mine[_PURPOSE] = purpose
            self._ctrl_win.Sync()  # (the purpose is read once the arrival is seen)
            mine[_ARRIVED] = meeting
            self._ctrl_win.Sync()
            self.mpi.poll(arrived, deadline, what, notices=notices)
            self._same_purpose(meeting, purpose)
            mine[_READY] = meeting
            self._ctrl_win.Sync()
            # Ready: every rank passes now unless one gave up before it was ready. Only a
            # rank that stopped (killed, stuck) makes this wait run out; one stuck between
            # arriving and being ready for longer than that then finds this rank gave up.
            self.mpi.poll(lambda: self._everyone(_READY, meeting, what),
                          max(deadline, time.monotonic()) + self._close_grace, what,
                          notices=False)
        except BaseException as error:
            self._give_up_meetings()
            late = [self.node_ranks[i] for i, faults in enumerate(self._faults)
                    if faults[_ARRIVED] < meeting]
            named = (CollectiveTimeout(f"{error}: rank(s) {late} did not come")
                     if isinstance(error, CollectiveTimeout) and late else error)
            self._failed = self._unusable(f"the node's ranks failed to meet "
                                          f"({type(named).__name__}: {named})")
            if named is not error:
                raise named from None
            raise

    def _give_up_meetings(self) -> None:
        """This rank meets no more: the others' meetings raise at once, and its close
        leaves the windows to MPI_Finalize."""
        self._faults[self.me][_GAVE_UP] = 1
        self._ctrl_win.Sync()

    def _unusable(self, reason: str) -> CollectiveError:
        """What the exchange raises from now on (`_failed`), for `reason`."""
        return CollectiveError(f"rank {self.rank}: {reason}; the shared-memory exchange "
                               "cannot continue, call comm.abort()")

    def _same_purpose(self, meeting: int, purpose: int) -> None:
        """MismatchError naming the ranks that arrived at this meeting for another purpose;
        PeerError where they came to close: they left (it read as a disagreement on the
        arguments; the eighty-third review)."""
        self._ctrl_win.Sync()  # (their arrivals were read: now their purposes)
        others = [(self.node_ranks[i], _PURPOSES.get(int(f[_PURPOSE]), "?"))
                  for i, f in enumerate(self._faults)
                  if f[_ARRIVED] == meeting and f[_PURPOSE] != purpose]
        leaving = [rank for rank, why in others if why == _PURPOSES[_CLOSE]]
        if leaving:
            raise PeerError(f"rank {self.rank}: rank(s) {leaving} left (closed their "
                            f"communicator) while this rank met them to {_PURPOSES[purpose]}")
        if others:
            raise MismatchError(
                f"rank {self.rank} met the node's ranks to {_PURPOSES[purpose]}, but "
                + ", ".join(f"rank {rank} to {why}" for rank, why in others)
                + ": the ranks are out of step (they disagree on the collectives' arguments "
                "or order)")

    def _everyone(self, word: int, meeting: int, what: str) -> bool | None:
        """True once every rank's `word` reached `meeting`; PeerError first if a rank gave
        up on a meeting (it never passes one again); None meanwhile. (No rank can pass
        this meeting and then give up on another before every rank passed this one: after
        it comes a blocking call over the node.)"""
        self._ctrl_win.Sync()
        faults = self._faults
        quitters = [self.node_ranks[i] for i, f in enumerate(faults) if f[_GAVE_UP]]
        if quitters:
            raise PeerError(f"rank {self.rank}: rank(s) {quitters} gave up waiting for {what} "
                            "(or an earlier meeting of the node's ranks)")
        return True if all(f[word] >= meeting for f in faults) else None

    def __repr__(self) -> str:
        return f"ShmTransport(rank={self.rank}, size={self.size}, node_ranks={len(self.local)})"


def _slot(seq: int) -> int:
    return (seq - 1) % SLOTS


def _allocate(node: MPI.Comm, nbytes: int) -> tuple[MPI.Win, list[np.ndarray]]:
    """A shared window of `nbytes` per rank in a passive epoch, and every rank's segment (bytes)."""
    info = MPI.Info.Create()
    info.Set("alloc_shared_noncontig", "true")
    win = MPI.Win.Allocate_shared(nbytes, 1, info, comm=node)
    info.Free()
    win.Lock_all(MPI.MODE_NOCHECK)
    return win, [np.frombuffer(win.Shared_query(r)[0], np.uint8) for r in range(node.Get_size())]
