"""Point-to-point messages between two ranks, beside the ordered collectives.

Sends and receives travel on a channel of their own (the transport's `p2p_*` methods, a
private communicator), so they never match a collective's messages, and they are not part
of the collectives' issue order: no agreement check, any thread may post them. Their
waits are bounded by the communicator's timeout and name the peer; a receive of the wrong
size is refused by name, its buffer untouched.

Example::

    if comm.rank == 0:
        comm.send(activations, dst=1, tag=7)
    else:
        comm.recv(buffer, src=0, tag=7)
"""
from __future__ import annotations

import time

import numpy as np

from .errors import CollectiveError, CollectiveTimeout, PeerError
from .validation import check_array

__all__ = ["Message", "check_peer", "check_tag", "TAG_UB"]

TAG_UB = 32767  # MPI guarantees tags up to 32767


def check_peer(peer, size: int, what: str) -> int:
    if isinstance(peer, bool) or not isinstance(peer, (int, np.integer)) or not 0 <= peer < size:
        raise ValueError(f"{what} must be a rank in [0, {size}), got {peer!r}")
    return int(peer)


def check_tag(tag) -> int:
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= tag <= TAG_UB:
        raise ValueError(f"tag must be an int in [0, {TAG_UB}], got {tag!r}")
    return int(tag)


class Message:
    """A posted send or receive: `test()` without blocking, `wait()` bounded by the timeout
    (counted from the wait: a receive posted early may wait out a long computation).

    A message dropped before it completed is kept alive, with its buffer, so a late message
    never lands in memory that was freed or reused: a send until it is done, a receive at
    least until the communicator closes. Over MPI a dropped receive is also cancelled (gloo
    cannot: it still takes the next message of its tag). A send cannot be withdrawn: one that timed out may still be delivered,
    reading x as it is then. Only sizes are checked: a message received into another dtype
    of the same byte count is reinterpreted, as MPI's bytes are.
    """

    __slots__ = ("_transport", "_request", "_buffer", "_peer", "_what", "_waiting",
                 "_timeout", "_state", "_send")

    def __init__(self, transport, buffer, peer: int, tag: int, *, send: bool, timeout: float):
        check_array(buffer, "x" if send else "out")
        # (a Fortran-ordered array was told it is not contiguous; the 113th review)
        if not buffer.flags.c_contiguous:
            name = "x" if send else "out"
            raise ValueError(f"{name} must be C-contiguous (row-major) for a "
                             f"{'send' if send else 'receive'}; pass np.ascontiguousarray("
                             f"{name})" + ("" if send else " and copy it back"))
        if not send and not buffer.flags.writeable:
            raise ValueError("out is read-only; pass a writable array")
        flat = buffer.reshape(-1)
        post = transport.p2p_send if send else transport.p2p_recv
        self._transport = transport
        self._buffer = buffer
        self._peer = peer
        self._waiting = (f"{'send to' if send else 'receive from'} rank {peer} (tag {tag}, "
                         f"{flat.nbytes} bytes)")
        self._what = f"rank {transport.rank}: {self._waiting}"
        self._timeout = timeout
        self._state: BaseException | bool = False  # True: done; an error: it failed
        self._send = send
        left = transport.p2p_peer_left(peer) if send else None
        if left is not None:  # (a small send completed into nowhere: the 86th review)
            raise PeerError(f"{self._what} refused: {left}")
        self._request = post(flat, peer, tag)

    @property
    def what(self) -> str:
        """The message in words: the rank, its peer, tag and bytes."""
        return self._what

    def test(self) -> bool:
        """Whether the message completed (raises if it failed)."""
        state = self._state
        if isinstance(state, BaseException):
            raise CollectiveError(f"{self._what} failed before: {state}")
        if not state:
            try:
                self._state = self._transport.p2p_test(self._request, self._what)
            except CollectiveError as error:
                left = self._transport.p2p_peer_left(self._peer)  # (MPI's process_vm_readv
                if left is not None:  # failure named nobody: the eighty-sixth review)
                    error = PeerError(f"{error}; {left}")
                self._state = error
                raise error from None
        return self._state

    def wait(self):
        """The buffer, once the message completed; CollectiveTimeout past the timeout,
        PeerError once a peer gave up on a collective or the message's peer left (then the
        message is abandoned)."""
        if self._state is not True:
            try:
                self._transport.poll(self._completed, time.monotonic() + self._timeout,
                                     self._waiting)
            except (CollectiveTimeout, PeerError) as error:  # (a PeerError left it live:
                sent = [self._request] if self._send else []  # a later sweep filled out)
                self._transport.abandon(sent, [] if self._send else [self._request])
                if self._send:  # (the sixteenth review: a resend arrived twice, both new)
                    error = type(error)(
                        f"{error}; the message may still be delivered, from x as it is "
                        "then (a send cannot be withdrawn): leave x unchanged and do not "
                        "send it again")
                else:  # (the fifty-ninth review: 256 MiB landed after the timeout)
                    error = type(error)(
                        f"{error}; a message already arriving may still land in out (a "
                        "transfer under way cannot be withdrawn): do not reuse out for "
                        "another message")
                self._state = error
                raise error from None
        return self._buffer

    def _completed(self) -> bool | None:
        """True once complete, else None; PeerError once the peer left without completing
        it (a wait ran out the whole timeout, though a collective raised at once; the
        eighty-second review)."""
        if self.test():
            return True
        left = self._transport.p2p_peer_left(self._peer)
        if left is None:
            return None
        if self.test():  # (what it sent before it left)
            return True
        raise PeerError(f"{self._what} failed: {left}")

    def __del__(self) -> None:
        if getattr(self, "_state", True) is False and hasattr(self, "_request"):
            try:  # dropped before it completed
                self._transport.p2p_drop(self._request, self._send)
            except Exception:  # noqa: BLE001 - the transport closed (at exit): nothing to keep
                pass
