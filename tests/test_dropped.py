"""DroppedSends keeps every send still in flight and lets the finished ones go, with sends
dropped from many threads and from inside its own prune (a message's __del__ in a garbage
collection). The transports' use of it runs under mpiexec and torchrun in the `p2p_check`
worker (`check_dropped_sends_let_go`)."""
import random
import threading

from collectives.transport.dropped import DroppedSends


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
    first = [FakeSend(True) for _ in range(10)]
    for send in first:
        dropped.add(send)
    assert len(dropped.take()) == 10
    for _ in range(200):  # (close settles what take gave: no prune completes them too)
        dropped.add(FakeSend(True))
    assert len(dropped.take()) == 210
