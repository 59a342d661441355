"""What a transport that moves its node's point-to-point bytes itself leaves to MPI."""
from __future__ import annotations

import numpy as np

from .mpi import MPITransport

__all__ = ["LeftToMPI"]


class LeftToMPI:
    """The transport interface's calls a wrapper of `self.mpi` does not change: MPI's own
    collectives, the point-to-point API's messages, the agreement's records and notices,
    the job's topology and control."""

    mpi: MPITransport

    def native_allreduce(self, src: np.ndarray, dst: np.ndarray, op: str, deadline: float) -> None:
        self.mpi.native_allreduce(src, dst, op, deadline)

    def native_reduce_scatter(self, src, dst, counts, op: str, deadline: float) -> None:
        self.mpi.native_reduce_scatter(src, dst, counts, op, deadline)

    def native_allgather(self, src, dst, deadline: float) -> None:
        self.mpi.native_allgather(src, dst, deadline)

    def native_broadcast(self, buf, root: int, deadline: float) -> None:
        self.mpi.native_broadcast(buf, root, deadline)

    def native_reduce(self, src, dst, op: str, root: int, deadline: float) -> None:
        self.mpi.native_reduce(src, dst, op, root, deadline)

    def native_alltoall(self, src, dst, deadline: float) -> None:
        self.mpi.native_alltoall(src, dst, deadline)

    def p2p_send(self, buf, peer: int, tag: int):
        return self.mpi.p2p_send(buf, peer, tag)

    def p2p_recv(self, buf, peer: int, tag: int):
        return self.mpi.p2p_recv(buf, peer, tag)

    def p2p_drop(self, request, send: bool) -> None:
        self.mpi.p2p_drop(request, send)

    def p2p_test(self, request, what: str) -> bool:
        return self.mpi.p2p_test(request, what)

    def p2p_peer_left(self, peer: int):
        return self.mpi.p2p_peer_left(peer)

    def exchange_records(self, record: np.ndarray, deadline: float, what: str) -> np.ndarray:
        return self.mpi.exchange_records(record, deadline, what)

    def begin(self, seq: int) -> None:
        self.mpi.begin(seq)

    def check_peers(self) -> None:
        self.mpi.check_peers()

    def tell_peers(self, kind: str, seq: int) -> None:
        self.mpi.tell_peers(kind, seq)

    def node_keys(self) -> list[int]:
        return self.mpi.node_keys()

    def allgather_object(self, obj: object) -> list:
        return self.mpi.allgather_object(obj)

    def barrier(self, deadline: float) -> None:
        self.mpi.barrier(deadline)

    def abort(self, errorcode: int) -> None:
        self.mpi.abort(errorcode)

    def poll(self, test, deadline: float, what: str):
        return self.mpi.poll(test, deadline, what)
