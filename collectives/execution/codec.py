"""What the executor asks of a wire codec, and the uncompressed one.

A codec decides what travels for each send and how a received payload is applied:

- `staged`: sends are encoded into a staging buffer and every receive lands in scratch
  (a compressing codec); otherwise sends go straight from work and copy-receives straight
  into it;
- `wire_dtype(work_dtype)`: the element type on the wire;
- `encode(region, staging)`: the payload to send for `region` (staging is None unstaged);
- `decode_copy(region, payload)`, `decode_reduce(region, payload, op)`: apply a payload.

`collectives.compression.HalfCodec` is the 16-bit one.
"""
from __future__ import annotations

from typing import Protocol

import kernels

__all__ = ["Codec", "Identity", "IDENTITY"]


class Codec(Protocol):
    staged: bool

    def wire_dtype(self, work_dtype): ...

    def encode(self, region, staging): ...

    def decode_copy(self, region, payload) -> None: ...

    def decode_reduce(self, region, payload, op: str) -> None: ...


class Identity:
    """The uncompressed wire: payload elements are work elements."""

    staged = False
    name = None

    def wire_dtype(self, work_dtype):
        return work_dtype

    def encode(self, region, staging):
        return region

    def decode_copy(self, region, payload) -> None:
        kernels.copy_into(region, payload)

    def decode_reduce(self, region, payload, op: str) -> None:
        kernels.reduce_into(region, payload, op)


IDENTITY = Identity()
