"""Point-to-point messages (`comm.isend`/`irecv`) over a gloo group, beside the collectives.

Gloo's send/recv requests report completion only from a blocking `wait()`: no test, no
future, no cancel, and a `wait(timeout)` that expires closes the group's connections. A
receive shorter than its message aborts the process. So:

- each message is a header (its length in bytes) and then its bytes, on tags of their own
  above every collective's (which are below 2**15), so they never match a plan's messages;
- a thread per message waits for it with no time limit and sets a flag that `test()` reads;
  the caller polls, and its deadline bounds the wait;
- a receive posts the receive of the bytes once the header says how many: into its buffer
  when the sizes agree, into scratch when not (reported, the buffer untouched); in the
  order its receives were posted from that peer with that tag, the order gloo matches
  them in;
- `close_connections()` makes every pending request of the group fail at once, so that
  their threads end: after a timeout (the group is unusable then, as after a collective's)
  and before the group is destroyed (a pending wait there aborts the process).

Example::

    messages = GlooMessages(group)
    request = messages.recv(buf, peer=1, tag=7)
    while not request.test("receive from rank 1"):
        ...
"""
from __future__ import annotations

import contextlib
import datetime
import threading

import numpy as np
import torch
import torch.distributed as dist

from ..errors import CollectiveError, PeerError

__all__ = ["GlooMessages", "byte_tensor"]

_TAGS = 1 << 15  # user tag t < 2**15: header on _TAGS + 2t, bytes on _TAGS + 2t + 1
_CLOSE_TAG = 3 << 15  # a receive no one sends to, whose expired wait closes the connections
_NO_LIMIT = datetime.timedelta(days=3650)  # gloo's own limit would close the connections


def byte_tensor(buf: np.ndarray) -> torch.Tensor:
    """A uint8 tensor over the memory of the 1-D contiguous array `buf`."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"the torch transport moves host (NumPy) arrays, got "
                        f"{type(buf).__module__}.{type(buf).__name__}; for GPU arrays under "
                        f"torchrun use collectives.init(transport='nccl')")
    return torch.from_dlpack(buf.view(np.uint8))


class GlooMessages:
    """Sends and receives over `group`; their requests have `test(what)`."""

    def __init__(self, group: dist.ProcessGroup):
        self.group = group
        self._lock = threading.Lock()
        self._last: dict[tuple[int, int], _Receive] = {}  # last receive per (peer, tag)
        self._pending = 0

    def send(self, buf: np.ndarray, peer: int, tag: int) -> _Message:
        data = byte_tensor(buf)
        header = np.array([data.numel()], np.int64)
        # (a message's header and bytes go out one after the other)
        with self._lock, self._posting("send to", peer, tag, buf.nbytes):
            works = [dist.isend(byte_tensor(header), group=self.group, group_dst=peer,
                                tag=_TAGS + 2 * tag)]
            if data.numel():
                works.append(dist.isend(data, group=self.group, group_dst=peer,
                                        tag=_TAGS + 2 * tag + 1))
            self._pending += 1
        return _Send(self, works, (header, data))

    def recv(self, buf: np.ndarray, peer: int, tag: int) -> _Message:
        data = byte_tensor(buf)
        with self._lock, self._posting("receive from", peer, tag, buf.nbytes):
            key = (peer, tag)
            receive = _Receive(self, data, key, self._last.get(key))
            self._last[key] = receive
            self._pending += 1
        return receive

    @contextlib.contextmanager
    def _posting(self, what: str, peer: int, tag: int, nbytes: int):
        """gloo's RuntimeError on posting (the peer's connection closed: it left) as the
        library's error (it escaped raw; the eighty-ninth review's run)."""
        try:
            yield
        except RuntimeError as error:
            raise gloo_error(f"rank {self.group.rank()}: {what} rank {peer} (tag {tag}, "
                             f"{nbytes} bytes)", error, peer) from None

    def close_connections(self) -> None:
        """Fail every pending request of the group now (their waits raise)."""
        rank, size = self.group.rank(), self.group.size()
        if size == 1:
            return
        try:
            dist.irecv(torch.empty(1, dtype=torch.uint8), group=self.group,
                       group_src=(rank + 1) % size, tag=_CLOSE_TAG).wait(
                datetime.timedelta(milliseconds=1))
        except RuntimeError:
            pass  # expected: gloo closed the connections (or had closed them already)

    def close(self) -> None:
        """Before the group is destroyed: end the waits of messages still pending."""
        if self._pending:
            self.close_connections()

    def _posted(self, receive: _Receive) -> None:
        """`receive` posted its bytes' receive: the next one from its peer and tag may."""
        receive.posted.set()
        with self._lock:
            if self._last.get(receive.key) is receive:
                del self._last[receive.key]

    def _ended(self) -> None:
        with self._lock:
            self._pending -= 1


def gloo_error(what: str, error: Exception, peer: int | None = None) -> CollectiveError:
    """`what` failed with gloo's `error`: a PeerError where the peer's connection closed
    under it (the peer left, gave up, failed or was interrupted: gloo carries no notice
    that says which; the 107th and 113th reviews), else a CollectiveError."""
    text = str(error)
    if "closed by peer" in text or "Connection reset" in text:
        who = "the peer" if peer is None else f"rank {peer}"
        return PeerError(f"{what} failed: {who} closed the connection (it left, gave up, "
                         f"failed or was interrupted): {text}")
    return CollectiveError(f"{what} failed: {text}")


class _Message:
    """A message that a thread of its own waits for; `test()` reads the outcome."""

    __slots__ = ("done", "messages", "problem")

    def __init__(self, messages: GlooMessages) -> None:
        self.messages = messages
        self.done = threading.Event()
        self.problem: Exception | str | None = None  # gloo's error, or what went wrong
        threading.Thread(target=self._run, name="collectives-gloo-message", daemon=True).start()

    def test(self, what: str) -> bool:
        """Whether the message completed; CollectiveError if it failed."""
        if not self.done.is_set():
            return False
        if isinstance(self.problem, str):
            raise CollectiveError(f"{what}: {self.problem}")
        if self.problem is not None:
            raise gloo_error(what, self.problem)
        return True

    def _run(self) -> None:
        try:
            self._complete()
        except Exception as error:  # noqa: BLE001 - reported by test()
            self.problem = error
        finally:
            self.messages._ended()
            self.done.set()

    def _complete(self) -> None:
        raise NotImplementedError


class _Send(_Message):
    __slots__ = ("buffers", "works")

    def __init__(self, messages: GlooMessages, works: list, buffers: tuple):
        self.works, self.buffers = works, buffers  # the buffers live as long as the request
        super().__init__(messages)

    def _complete(self) -> None:
        for work in self.works:
            work.wait(_NO_LIMIT)


class _Receive(_Message):
    __slots__ = ("before", "buf", "header", "header_work", "key", "posted")

    def __init__(self, messages: GlooMessages, buf: torch.Tensor, key: tuple[int, int],
                 before: _Receive | None):
        self.buf, self.key, self.before = buf, key, before
        self.posted = threading.Event()
        self.header = np.zeros(1, np.int64)
        self.header_work = dist.irecv(byte_tensor(self.header), group=messages.group,
                                      group_src=key[0], tag=_TAGS + 2 * key[1])
        super().__init__(messages)

    def _complete(self) -> None:
        try:
            self.header_work.wait(_NO_LIMIT)
            nbytes, room = int(self.header[0]), self.buf.numel()
            if self.before is not None:
                self.before.posted.wait()
                self.before = None
            into = self.buf if nbytes == room else torch.empty(nbytes, dtype=torch.uint8)
            work = None if not nbytes else dist.irecv(
                into, group=self.messages.group, group_src=self.key[0],
                tag=_TAGS + 2 * self.key[1] + 1)
        finally:
            self.messages._posted(self)
        if work is not None:
            work.wait(_NO_LIMIT)
        if nbytes != room:
            self.problem = (f"message truncated: it has {nbytes} bytes, the buffer {room}"
                            if nbytes > room else
                            f"the message has {nbytes} bytes, the buffer {room}"
                            ) + "; the buffer was not written"
