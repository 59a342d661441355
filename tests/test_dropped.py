"""DroppedSends keeps every send still in flight and lets the finished ones go, with sends
dropped from many threads and from inside its own prune (a message's __del__ in a garbage
collection). The transports' use of it runs under mpiexec and torchrun in the `p2p_check`
worker (`check_dropped_sends_let_go`)."""
import random
import threading
import time

from collectives.transport import dropped as dropped_module
from collectives.transport.dropped import PRUNE_INTERVAL_S, DroppedSends
from tests.interrupts import interrupt_at_line


class FakeSend:
    def __init__(self, done: bool):
        self.done = done


def test_sends_in_flight_are_kept_from_many_threads():
    dropped = DroppedSends(lambda send: send.done)
    in_flight: list[list[FakeSend]] = [[] for _ in range(4)]

    def drop(mine: list, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20_000):
            send = FakeSend(rng.random() < 0.9)
            if not send.done:
                mine.append(send)
            dropped.add(send)

    threads = [threading.Thread(target=drop, args=(mine, seed))
               for seed, mine in enumerate(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = {id(send) for send in dropped.take()}
    expected = {id(send) for mine in in_flight for send in mine}
    assert expected <= kept, f"{len(expected - kept)} sends in flight were let go"
    assert len(kept) < 2 * len(expected) + 64, f"kept {len(kept)} for {len(expected)} in flight"


def test_a_drop_inside_the_prune_neither_blocks_nor_is_lost():
    inner = FakeSend(False)

    def finished(send) -> bool:  # (a garbage collection in the prune drops another send)
        if send is not inner and not hasattr(finished, "ran"):
            finished.ran = True
            dropped.add(inner)
        return send.done

    dropped = DroppedSends(finished)
    for _ in range(100):
        dropped.add(FakeSend(True))
    kept = dropped.take()
    assert any(send is inner for send in kept) and len(kept) < 100, len(kept)


def test_nothing_is_let_go_after_take():
    dropped = DroppedSends(lambda send: send.done)
    for _ in range(10):
        dropped.add(FakeSend(True))
    before = len(dropped.take())
    for _ in range(200):  # (close settles what take gave: no prune completes them too)
        dropped.add(FakeSend(True))
    dropped.tidy()
    assert len(dropped.take()) == before + 200


def test_a_burst_delivered_later_is_let_go_by_tidy():
    """A burst to a slow receiver: every prune found its sends in flight and the count to
    the next doubled; once delivered they stayed kept until close (1.2 GB after 1500 sends
    of 1 MiB; the ninetieth review)."""
    dropped = DroppedSends(lambda send: send.done)
    burst = [FakeSend(False) for _ in range(1500)]
    for send in burst:
        dropped.add(send)
    for send in burst:
        send.done = True  # delivered
    time.sleep(PRUNE_INTERVAL_S)
    dropped.tidy()  # (the transport's next send, message test or collective)
    assert dropped.take() == []


def test_an_interrupt_at_any_line_of_a_prune_loses_nothing_and_holds_nothing():
    """An interrupt (a signal handler that raises) as a prune began left its lock held:
    pruning stopped for good and close() waited for ever in take() (the ninetieth review).
    Here one lands at each line in turn of a send's add; after it, the send in flight is
    still kept and take() returns."""
    for n in range(1, 40):
        dropped = DroppedSends(lambda send: send.done)
        kept = FakeSend(False)
        dropped.add(kept)
        for _ in range(70):
            dropped._requests.append(FakeSend(True))  # (due for a prune by count)
        interrupt_at_line(lambda: dropped.add(FakeSend(True)), n, dropped_module.__file__)
        done = threading.Event()
        taken = []
        threading.Thread(target=lambda: (taken.extend(dropped.take()), done.set()),
                         daemon=True).start()
        assert done.wait(5), f"interrupted at line {n}: take() waited on a lock left held"
        assert kept in taken, f"interrupted at line {n}: the send in flight was let go"
