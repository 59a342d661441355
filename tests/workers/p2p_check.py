"""Point-to-point messages beside the collectives: values, any dtype, a ring of sends,
errors for bad peers and sizes, a receive that times out, and no interference with
collectives in flight.

Usage: mpiexec -n P python -m tests.workers.p2p_check   (P >= 2)
       torchrun --nproc-per-node P -m tests.workers.p2p_check
"""
from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np

import collectives
from tests.workers.common import Tally, rank_data

COUNT = 1001
SHORT = 3.0  # the short timeouts: over gloo, init's group must connect within it


def main() -> None:
    comm = collectives.init(timeout=30)
    tally = Tally(comm.rank)
    p, me = comm.size, comm.rank
    nxt, prev = (me + 1) % p, (me - 1) % p
    for dtype in collectives.DTYPES:
        sent = comm.isend(rank_data(COUNT, dtype, me), dst=nxt, tag=5)
        handle = comm.allreduce_async(np.ones(3, np.float32))  # a collective in flight
        got = comm.recv(np.empty(COUNT, dtype), src=prev, tag=5)
        sent.wait()
        tally.check(np.array_equal(got, rank_data(COUNT, dtype, prev)), f"{np.dtype(dtype)} ring")
        tally.check(bool((handle.wait() == p).all()), "the collective beside the messages")
    try:  # to itself: MPI delivers it; gloo's pairs connect distinct ranks only (it failed
        # with gloo's "Pair is not connected")
        back = comm.isend(np.arange(3.0), dst=me, tag=7)
        got = comm.recv(np.empty(3), src=me, tag=7)
        back.wait()
        tally.check(comm.transport_name != "torch" and np.array_equal(got, np.arange(3.0)),
                    f"to itself over {comm.transport_name}: {got}")
    except collectives.CollectiveError as error:
        tally.check(comm.transport_name == "torch" and "with itself" in str(error),
                    f"to itself over {comm.transport_name}: {error}")
    for bad, text in ((p, f"dst must be a rank in [0, {p})"), (-1, "dst must be a rank")):
        try:
            comm.send(np.ones(2), dst=bad)
            tally.check(False, f"dst={bad}: no error")
        except ValueError as error:
            tally.check(text in str(error), f"dst={bad}: {error}")
    try:  # (it said "not contiguous"; the 113th review)
        comm.isend(np.asfortranarray(np.ones((3, 3))), dst=nxt)
        tally.check(False, "a Fortran-ordered send was posted")
    except ValueError as error:
        tally.check("x must be C-contiguous" in str(error), f"a Fortran-ordered send: {error}")
    check_wrong_sizes(comm, tally)
    check_posting_order(comm, tally)
    check_send_waited_first(comm, tally)
    check_receives_posted_ahead(comm, tally)
    check_received_during_a_collective(tally)
    comm.barrier()
    short = collectives.init(timeout=SHORT)
    early = collectives.init(timeout=SHORT)  # (over gloo a timeout leaves short unusable)
    if me == 0:  # rank 1 sends nothing: the receive gives up, naming it
        start = time.monotonic()
        try:
            short.recv(np.empty(4), src=1, tag=11)
            tally.check(False, "a receive from a silent rank returned")
        except collectives.CollectiveTimeout as error:
            tally.check("receive from rank 1 (tag 11" in str(error), f"unclear timeout: {error}")
        tally.check(time.monotonic() - start < SHORT + 2, "the timed-out receive took too long")
        # (gloo's "Application timeout caused pair closure" came out; the 114th review)
        if comm.transport_name == "torch":
            try:
                short.send(np.ones(1), dst=1, tag=12)
                tally.check(False, "a send after a timed-out receive over gloo was posted")
            except collectives.CollectiveError as error:
                tally.check("this communicator is unusable" in str(error),
                            f"a send after a timed-out receive over gloo: {error}")
    got = comm.allreduce(np.ones(2), op="sum")
    tally.check(bool((got == p).all()), "a collective after the timed-out receive")
    comm.barrier()
    if comm.transport_name != "torch":  # (over gloo a timeout leaves short unusable)
        check_send_timeout(comm, short, tally)
    check_posted_early(comm, early, tally)
    check_dropped(comm, tally)
    check_dropped_in_a_chain(comm, tally)
    check_dropped_sends_let_go(comm, tally)
    try:  # a communicator whose receive timed out (over MPI: given up on) closes cleanly
        short.close()  # (it raised AttributeError on the abandoned probed receive)
        early.close()
    except Exception as error:  # noqa: BLE001 - any error is the failure
        tally.check(False, f"close after a timed-out receive: {type(error).__name__}: {error}")
    try:
        early.isend(np.ones(2), dst=0)
        tally.check(False, "isend on a closed communicator was posted")
    except collectives.CollectiveError as error:
        tally.check("isend: this communicator is closed" in str(error), f"after close: {error}")
    check_pending_at_close(tally)
    if comm.transport_name != "torch":  # (gloo's send waits for its receive)
        check_sent_never_received(tally)
    check_peer_left(tally)
    check_send_pending_at_a_lone_close(comm, tally)
    if comm.transport_name != "torch":  # (over gloo a timeout leaves it unusable)
        check_receive_after_a_peer_error(comm, tally)
    tally.finish()


def check_receive_after_a_peer_error(world, tally) -> None:
    """A receive whose wait raised PeerError (a peer gave up on a collective) stayed posted:
    a later wait on another message took its message into out, after the error (the
    fifty-ninth review). Now it is abandoned, as a timed-out one is."""
    comm = collectives.init(timeout=1)
    out = np.full(4, -1.0)
    if comm.rank == 1:
        message = comm.irecv(out, src=0, tag=9)
        time.sleep(2)  # rank 0 gives up on the all-reduce meanwhile
    try:
        comm.allreduce(np.ones(3, np.float32))
    except collectives.CollectiveError:
        pass  # every rank raises: its timeout, or the others' notice
    if comm.rank == 1:
        try:
            message.wait()
            tally.check(False, "a receive waited after a peer gave up returned")
        except collectives.PeerError as error:
            tally.check("may still land in out" in str(error), f"the receive: {error}")
    world.barrier()  # then rank 0 sends tags 9 and 10
    if comm.rank == 0:
        comm.send(np.arange(4.0), dst=1, tag=9)
        comm.send(np.arange(2.0), dst=1, tag=10)
    elif comm.rank == 1:
        time.sleep(0.5)
        try:
            comm.recv(np.empty(2), src=0, tag=10)
        except collectives.CollectiveError:
            pass  # (a PeerError, or its message taken: either way out must stay)
        tally.check(bool((out == -1).all()), f"out written after the error: {out}")
    world.barrier()


def check_send_timeout(comm, short, tally) -> None:
    """A send that timed out says that it may still be delivered (a send cannot be
    withdrawn), and it is: the receiver gets it after the error."""
    big = np.full(1 << 21, 1.0, np.float32)  # 8 MiB: a rendezvous, no receive posted yet
    if comm.rank == 0:
        try:
            short.send(big, dst=1, tag=12)
            tally.check(False, "a send to a rank that does not receive returned")
        except collectives.CollectiveTimeout as error:
            tally.check("may still be delivered" in str(error), f"send timeout: {error}")
    comm.barrier()
    if comm.rank == 1:
        got = short.recv(np.empty_like(big), src=0, tag=12)
        tally.check(bool((got == 1.0).all()), "the send that timed out was not delivered")
    comm.barrier()


def check_pending_at_close(tally) -> None:
    """A message posted before close() and waited after raised mpi4py's bare "Invalid
    communicator" (a receive), or waited out the timeout (a send; the twelfth review)."""
    comm = collectives.init(timeout=5)
    pending = delivered = None
    if comm.rank == 0:  # nobody sends it
        pending = comm.irecv(np.empty(4), src=1, tag=3)
        comm.recv(np.empty(2), src=1, tag=5)
        comm.send(np.ones(1), dst=1, tag=6)  # rank 1 closes only once tag 5 arrived here
    elif comm.rank == 1:  # nobody receives it (2 MiB: not sent eagerly)
        pending = comm.isend(np.ones(1 << 18), dst=0, tag=4)
        delivered = comm.isend(np.ones(2), dst=0, tag=5)  # received before close
        comm.recv(np.empty(1), src=0, tag=6)
    over_mpi = comm.transport_name == "mpi"
    comm.close()
    if delivered is not None:  # it was reported failed (the thirteenth review)
        try:
            delivered.wait()
        except collectives.CollectiveError as error:
            tally.check(False, f"a send received before close, waited after: {error}")
    if pending is None:
        return
    start = time.monotonic()
    try:  # (a send may complete: over MPI the receiver's close takes what was sent to it)
        pending.wait()
        tally.check(over_mpi and delivered is not None, "a receive pending at close completed")
    except collectives.CollectiveError as error:
        # (over gloo it said "Application timeout caused pair closure"; the 113th review)
        tally.check(time.monotonic() - start < 2 and "was closed" in str(error),
                    f"pending at close: {type(error).__name__}: {error}")


def check_sent_never_received(tally) -> None:
    """A send nobody received, waited (MPI buffered it) or dropped (fire and forget),
    stayed in the freed communicator: the next communicator's receive of its tag took it
    (the eighty-sixth review); one from another thread as the communicator closed went
    uncounted, so undrained (every time; the eighty-ninth review). A close waits for its
    dropped sends as long as the receivers drain them."""
    for value in (111.0, 222.0):
        comm = collectives.init(timeout=10)
        sending = threading.Thread(target=_send_until_closed, args=(comm, value))
        if comm.rank == 1:
            comm.send(np.full(4, value), dst=0, tag=3)
            comm.isend(np.full(4, value), dst=0, tag=4)  # dropped
            if value == 111.0:
                sending.start()
                time.sleep(0.01)
            else:
                comm.send(np.full(4, value), dst=0, tag=5)
        if value == 222.0 and comm.rank == 0:
            for tag in (3, 4, 5):
                got = comm.recv(np.empty(4), src=1, tag=tag)
                tally.check(bool((got == 222).all()), f"a send nobody received (tag {tag}) "
                                                      f"came out of the next communicator: {got}")
        comm.close()
        if sending.ident is not None:
            sending.join()
    comm = collectives.init(timeout=10)  # large dropped sends nobody received: the sender
    if comm.rank == 1:  # waited 0.1 s for the drain at close, then kept its communicators
        for _ in range(20):  # (the ninety-third review)
            comm.isend(np.ones(1 << 20), dst=0, tag=6)
    comm.close()
    from mpi4py import MPI

    tally.check(comm._transport.comm == MPI.COMM_NULL,
                "a close whose dropped sends the receiver drained kept its communicators")


def _send_until_closed(comm, value: float) -> None:
    try:
        while True:
            comm.isend(np.full(4, value), dst=0, tag=5)
    except collectives.CollectiveError:
        pass


def check_send_pending_at_a_lone_close(world, tally) -> None:
    """Rank 0 closes alone with a send nobody took yet; its wait said "failed", but MPI
    still held the send and delivered it later, from x as it then was, or from freed and
    reused memory (rank 1 got 77s for 43s; the 113th review). The send is now kept with
    its buffer, and the error says it may still be delivered. (Over gloo the send fails
    with the connections.)"""
    comm = collectives.init(timeout=10)
    if comm.transport_name == "torch" or comm.rank > 1:
        comm.close()
        return
    if comm.rank == 0:
        x = np.full(1 << 13, 43.0)
        sent = comm.isend(x, dst=1, tag=2)
        comm.close()  # alone: rank 1 waits on world
        try:
            sent.wait()
        except collectives.CollectiveError as error:
            tally.check("may still be delivered, from x" in str(error),
                        f"a send pending at a lone close: {error}")
        del sent, x
        gc.collect()
        reused = [np.full(1 << 13, 77.0) for _ in range(64)]
        world.send(np.ones(1), dst=1, tag=30)  # now take it
        world.recv(np.empty(1), src=1, tag=31)
        del reused
        return
    world.recv(np.empty(1), src=0, tag=30)
    try:
        got = comm.recv(np.empty(1 << 13), src=0, tag=2)
        tally.check(bool((got == 43).all()), f"a send kept at close gave {np.unique(got)[:3]}")
    except collectives.CollectiveError as error:
        tally.check(False, f"a send kept at close: {type(error).__name__}: {error}")
    world.send(np.ones(1), dst=0, tag=31)
    comm.close()


def check_peer_left(tally) -> None:
    """A message with a rank that closed its communicator waited out the whole timeout,
    though a collective raised PeerError at once (the eighty-second review)."""
    comm = collectives.init(timeout=30)
    if comm.rank != 0:
        comm.close()  # rank 0 is waiting: the others leave without it
        return
    sent = comm.isend(np.ones(1 << 18), dst=1, tag=1)  # (2 MiB: nobody takes it)
    for message in (comm.irecv(np.empty(4), src=1, tag=2), sent):
        start = time.monotonic()
        try:
            message.wait()
            tally.check(False, "a message with a rank that left completed")
        except collectives.CollectiveError as error:
            left = "closed the connection" if comm.transport_name == "torch" else \
                "rank 1 left"  # (over gloo a CollectiveError; the 113th review)
            tally.check(isinstance(error, collectives.PeerError) and left in str(error)
                        and "rank 1 (tag" in str(error) and time.monotonic() - start < 10,
                        f"a peer that left: {error!r}")
    try:  # a small send completed (MPI buffers it) into nowhere (the eighty-sixth review)
        comm.send(np.ones(3), dst=1, tag=3)
        tally.check(comm.transport_name == "torch", "a send to a rank known to have left")
    except collectives.CollectiveError as error:
        tally.check(comm.transport_name == "torch" or "refused: rank 1 left" in str(error),
                    f"a send to a rank known to have left: {error!r}")
    comm.close()


def check_wrong_sizes(comm, tally) -> None:
    """A receive whose message is longer or shorter than its buffer raises, naming both
    sizes, and leaves the buffer as it was (the message landed in it first); the next
    message of that tag arrives whole."""
    if comm.rank == 0:
        for tag in (9, 10):
            comm.send(np.arange(8, dtype=np.int64), dst=1, tag=tag)
            comm.send(np.full(4, 5, np.int64), dst=1, tag=tag)
    elif comm.rank == 1:
        for tag, count, text in ((9, 4, "message truncated: it has 64 bytes, the buffer 32"),
                                 (10, 16, "the message has 64 bytes, the buffer 128")):
            buffer = np.full(count, -1, np.int64)
            try:
                comm.recv(buffer, src=0, tag=tag)
                tally.check(False, f"a receive of {count} for 8 elements raised nothing")
            except collectives.CollectiveError as error:
                tally.check(text in str(error) and "not written" in str(error),
                            f"unclear error: {error}")
            tally.check(bool((buffer == -1).all()), f"the refused receive wrote {buffer}")
            got = comm.recv(np.empty(4, np.int64), src=0, tag=tag)
            tally.check(bool((got == 5).all()), f"the message after a refused one: {got}")
    comm.barrier()


def check_send_waited_first(comm, tally) -> None:
    """Every rank sends a large message round the ring and waits for its send before its
    receive (torch's batch_isend_irecv does): the posted receive took its message only
    when tested, so every rank waited for a rendezvous nobody answered (the forty-first
    review: 2000 float32 passed, 2100 hung)."""
    p, me = comm.size, comm.rank
    data = np.full(1 << 18, float(me), np.float32)  # 1 MiB: far past MPI's eager limit
    got = np.empty_like(data)
    receive = comm.irecv(got, src=(me - 1) % p, tag=17)
    send = comm.isend(data, dst=(me + 1) % p, tag=17)
    try:
        send.wait()
        receive.wait()
        tally.check(bool((got == (me - 1) % p).all()), f"large ring, send waited first: {got[:3]}")
    except collectives.CollectiveError as error:
        tally.check(False, f"large ring, send waited first: {type(error).__name__}: {error}")
    comm.barrier()


def check_receives_posted_ahead(comm, tally) -> None:
    """Round trips while many receives are posted ahead (pipeline microbatches do): each
    unfinished poll swept every pending channel, 100x slower round trips at 2000 posted
    (the forty-second review). Sweeps are now paced: few over 300 round trips. Each round
    trip waits for its send last: over gloo's messages, as over gloo's own, a send
    completes only once the peer has posted its receive, so a ring of blocking sends
    waits until the timeout (taken for a stall of the posted receives on 2026-12-06)."""
    p, me = comm.size, comm.rank
    ahead = [comm.irecv(np.empty(1), src=(me - 1) % p, tag=1000 + j) for j in range(200)]
    receives = getattr(comm._transport, "_receives", None)  # MPI's: count its sweeps
    sweeps = []
    if receives is not None:
        sweep = receives.progress
        receives.progress = lambda: (sweeps.append(1), sweep())
    start = time.monotonic()
    for _ in range(300):
        sent = comm.isend(np.ones(1), dst=(me + 1) % p, tag=9)
        comm.recv(np.empty(1), src=(me - 1) % p, tag=9)
        sent.wait()
    elapsed = time.monotonic() - start
    if receives is not None:
        del receives.progress
    tally.check(len(sweeps) <= 5 + 1000 * elapsed,
                f"{len(sweeps)} sweeps of the posted receives in {elapsed:.3f} s")
    for j, receive in enumerate(ahead):  # the posted receives still take their messages
        comm.send(np.full(1, float(j)), dst=(me + 1) % p, tag=1000 + j)
    got = [float(receive.wait()[0]) for receive in ahead]
    tally.check(got == [float(j) for j in range(200)], f"receives posted ahead got {got[:5]}")
    comm.barrier()


def check_received_during_a_collective(tally) -> None:
    """Rank 1 posts a receive, then joins a collective; rank 0 sends it 1 MiB, blocking,
    then joins (a correct MPI program): MPI got the receive only once a message wait
    probed for it, so rank 0's send waited for ever, and both ranks timed out (the 113th
    review)."""
    comm = collectives.init(timeout=5)
    got = np.zeros(1 << 18, np.float32)
    try:
        receive = comm.irecv(got, src=0, tag=21) if comm.rank == 1 else None
        if comm.rank == 0:
            comm.send(np.full(got.size, 7.0, np.float32), dst=1, tag=21)
        total = comm.allreduce(np.ones(1, np.float32))
        if receive is not None:
            receive.wait()
        tally.check(bool((got == 7).all()) or comm.rank != 1, f"received {got[:3]}")
        tally.check(float(total[0]) == comm.size, f"the collective gave {total}")
    except collectives.CollectiveError as error:
        tally.check(False, f"a receive posted before a collective: {type(error).__name__}: "
                           f"{error}")
    comm.close()


def check_posting_order(comm, tally) -> None:
    """Receives of one peer and tag take its messages in the order they were posted, also
    when the later one is waited for first."""
    if comm.rank == 0:
        for value in (1.0, 2.0, 3.0):
            comm.send(np.full(3, value), dst=1, tag=15)
    elif comm.rank == 1:
        first, second = (comm.irecv(np.empty(3), src=0, tag=15) for _ in range(2))
        third = comm.irecv(np.empty(3), src=0, tag=15)
        got = [third.wait()[0], second.wait()[0], first.wait()[0]]
        tally.check(got == [3.0, 2.0, 1.0], f"receives waited in reverse order got {got}")
    comm.barrier()


def check_posted_early(comm, early, tally) -> None:
    """A receive on `early` posted long before its wait: the timeout (SHORT) counts from the
    wait (it counted from the post: the wait timed out at once). Rank 0 sends only once
    rank 1 says (on `comm`) that it is about to wait."""
    if comm.rank == 1:
        message = early.irecv(np.empty(3), src=0, tag=12)
        time.sleep(SHORT + 0.5)
        comm.send(np.ones(1), dst=0, tag=17)
        try:
            tally.check(bool((message.wait() == 4.0).all()), "the early receive's values")
        except collectives.CollectiveTimeout as error:
            tally.check(False, f"a receive posted early timed out at its wait: {error}")
    elif comm.rank == 0:
        comm.recv(np.empty(1), src=1, tag=17)
        early.send(np.full(3, 4.0), dst=1, tag=12)


def check_dropped_in_a_chain(comm, tally) -> None:
    """Receives A, B, C of one peer and tag; B dropped before any message came; C waited
    first: A takes message 1 and C message 2 (C took message 1: the chain stopped at B).
    Over MPI only: gloo cannot drop a receive (B still takes its message)."""
    if comm.transport_name == "torch":
        return
    comm.barrier()
    if comm.rank == 1:
        first = comm.irecv(np.empty(2), src=0, tag=16)
        comm.irecv(np.empty(2), src=0, tag=16)  # dropped at once
        gc.collect()
        third = comm.irecv(np.empty(2), src=0, tag=16)
        comm.barrier()
        got = [third.wait()[0], first.wait()[0]]
        tally.check(got == [2.0, 1.0], f"after a receive dropped mid-chain: C, A got {got}")
    else:
        comm.barrier()
        if comm.rank == 0:
            for value in (1.0, 2.0):
                comm.send(np.full(2, value), dst=1, tag=16)
    comm.barrier()


def check_dropped_sends_let_go(comm, tally) -> None:
    """Fire-and-forget sends let their buffers go once delivered: every one was kept for
    the communicator's life (1500 sends of 1 MiB held 1.5 GB; the eighty-sixth review).
    Rank 0 drops 200 sends of 64 KiB, then 300 of 8 bytes; rank 1 receives them all."""
    comm.barrier()
    big, small = 200, 300
    if comm.rank == 0:
        kept = []
        for i in range(big):
            x = np.full(8192, float(i))
            kept.append(weakref.ref(x))
            comm.isend(x, dst=1, tag=17)  # dropped at once
        del x
        comm.barrier()  # (rank 1 received them all)
        for i in range(small):
            comm.isend(np.full(1, float(i)), dst=1, tag=18)
        comm.barrier()
        alive = sum(ref() is not None for ref in kept)
        tally.check(alive == 0, f"{alive} of {big} delivered dropped sends still kept")
    elif comm.rank == 1:
        got = [comm.recv(np.empty(8192), src=0, tag=17)[0] for _ in range(big)]
        comm.barrier()
        got += [comm.recv(np.empty(1), src=0, tag=18)[0] for _ in range(small)]
        comm.barrier()
        tally.check(got == [*map(float, range(big)), *map(float, range(small))],
                    "dropped sends delivered other values")
    else:
        comm.barrier()
        comm.barrier()


def check_dropped(comm, tally) -> None:
    """Messages dropped before they completed: no late byte lands in memory freed and
    reused (it did), a dropped send still delivers its data (its buffer was freed under
    MPI: the receiver read freed memory). Over MPI a dropped receive is cancelled; gloo
    cannot cancel: there it takes the next message of its tag."""
    cancels = comm.transport_name != "torch"
    fresh = []
    if comm.rank == 1:
        comm.irecv(np.zeros(100), src=0, tag=13)  # dropped at once
        gc.collect()
        fresh = [np.full(100, -1.0) for _ in range(64)]  # where the dropped one's memory went
    if comm.rank == 0:
        comm.isend(np.arange(100_000, dtype=np.float64), dst=1, tag=14)  # dropped at once
        gc.collect()
    comm.barrier()
    if comm.rank == 0:
        sends = [comm.isend(np.full(100, value), dst=1, tag=13) for value in (7.0, 8.0)]
        for message in sends:
            message.wait()
    elif comm.rank == 1:
        received = [comm.recv(np.empty(100), src=0, tag=13)[0] for _ in range(1 + cancels)]
        tally.check(all(bool((f == -1.0).all()) for f in fresh), "a dropped receive wrote")
        tally.check(received == ([7.0, 8.0] if cancels else [8.0]),
                    f"after a dropped receive: {received}")
        got = comm.recv(np.empty(100_000), src=0, tag=14)
        tally.check(np.array_equal(got, np.arange(100_000, dtype=np.float64)),
                    "a dropped send delivered other bytes")
    comm.barrier()

if __name__ == "__main__":
    main()
