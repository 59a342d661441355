"""A plan as the simulator reads it: flat per-step lists in issue order, and the copies.

`Trace` holds everything the engine reads of one rank's plan: its sends and receives in the
order the executor issues them (Plan.steps), when each receive may be posted (the
executor's `Posting` rule, shared), and the bytes the executor copies between the input,
the work buffer and the output (`IoSchedule`).
"""
from __future__ import annotations

from ..algorithms.plan import Plan, Send
from ..execution import SCRATCH_SLOTS, IoSchedule, Posting

__all__ = ["Step", "Trace", "step_list"]

Step = tuple[int, str, int, int, bool]  # (round, "send" | "recv", peer, elements, reduce)


def step_list(plan: Plan) -> list[Step]:
    """What the simulator reads of a plan: every step in issue order (Plan.steps)."""
    return [(k, "send", s.peer, s.hi - s.lo, False) if isinstance(s, Send)
            else (k, "recv", s.peer, s.hi - s.lo, s.reduce) for k, s in plan.steps()]


class Trace:
    """One rank's plan as flat lists, in the order the executor issues it (Plan.steps), and
    the bytes the executor copies between input, work buffer and output (IoSchedule)."""

    def __init__(self, plan: Plan, itemsize: int, copies: str = "none", work_itemsize: int = 0,
                 staged: bool = False):
        self.plan = plan
        posting = Posting.of(plan, staged=staged)
        self.recv_opens = posting.opens
        self.rounds = len(plan.rounds)
        self.prefetch = plan.prefetch
        self.gate = plan.reduce_after_send
        self.send_round, self.send_peer, self.send_bytes = [], [], []
        self.send_index: dict[tuple[int, int], int] = {}
        self.round_sends: list[list[int]] = [[] for _ in range(self.rounds)]
        self.recv_round, self.recv_peer, self.recv_bytes, self.recv_reduce = [], [], [], []
        self.recv_chan, self.recv_slot_prev = [], []
        self.round_recv_end = [0] * self.rounds
        sent: dict[int, int] = {}
        received: dict[int, int] = {}
        slot_users: list[int] = []
        n_sends = 0
        for k, step in plan.steps():
            peer = step.peer
            if type(step) is Send:
                j = sent.get(peer, 0)
                sent[peer] = j + 1
                self.send_index[peer, j] = n_sends
                self.round_sends[k].append(n_sends)
                self.send_round.append(k)
                self.send_peer.append(peer)
                self.send_bytes.append((step.hi - step.lo) * itemsize)
                n_sends += 1
            else:
                j = received.get(peer, 0)
                received[peer] = j + 1
                i = len(self.recv_round)
                reduce = step.reduce
                needs_slot = posting.needs_slot[i]
                self.recv_slot_prev.append(slot_users[-SCRATCH_SLOTS]
                                           if needs_slot and len(slot_users) >= SCRATCH_SLOTS else -1)
                if needs_slot:
                    slot_users.append(i)
                self.recv_round.append(k)
                self.recv_peer.append(peer)
                self.recv_bytes.append((step.hi - step.lo) * itemsize)
                self.recv_reduce.append(reduce)
                self.recv_chan.append(j)
                self.round_recv_end[k] = i + 1
        for k in range(1, self.rounds):  # rounds without receives end where the last did
            self.round_recv_end[k] = max(self.round_recv_end[k], self.round_recv_end[k - 1])
        self._copies(plan, copies, work_itemsize or itemsize)

    def _copies(self, plan: Plan, copies: str, itemsize: int) -> None:
        """Bytes copied src -> work before each round's sends and each reduce, work -> out
        after each receive, and of the regions no receive writes in round 0
        (executor.IoSchedule; none without copies)."""
        nrecv = len(self.recv_round)
        self.load_round, self.load_recv, self.store_recv = [0] * self.rounds, [0] * nrecv, [0] * nrecv
        self.tail = 0
        if copies == "none" or not self.rounds:
            return
        io = IoSchedule.of(plan, from_src=copies == "in")  # "in+out": peers read work in place

        def nbytes(ranges) -> int:
            return itemsize * sum(hi - lo for lo, hi in ranges)

        self.load_round = [nbytes(r) for r in io.load_round]
        self.load_recv = [nbytes(r) for r in io.load_recv]
        if copies == "in+out":
            self.store_recv = [nbytes(r) for r in io.store_recv]
        if not plan.result_received:
            self.tail = nbytes(io.tail if copies == "in+out" else io.work_tail)

    def consumed(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int, bool]]]:
        """(sends, receives) as the engine reads them: (round, peer, bytes[, reduce]) each."""
        return (list(zip(self.send_round, self.send_peer, self.send_bytes)),
                list(zip(self.recv_round, self.recv_peer, self.recv_bytes, self.recv_reduce)))
