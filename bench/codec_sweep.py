"""Every float32 input through the compiled codec against the NumPy twin: ``python -m bench.codec_sweep``.

A one-off check, not a test (a few minutes on one core, most of it NumPy's reference): all
2^32 float32 bit patterns are encoded to float16 and to bfloat16 (`kernels.encode_into`:
the payload and the value the sender keeps, which is compress then decompress) by every
instruction set this CPU runs, and compared bit for bit with `kernels._numpy`. Prints,
per wire and instruction set, how many of the 2^32 inputs differ in either output (0
expected). ``--chunks K`` sweeps only the first K of the 256 chunks of 2^24 patterns.
"""

from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

import kernels
from bench.arguments import positive_int
from kernels import _codec, _numpy

__all__ = ["main", "sweep"]

CHUNK = 1 << 24  # patterns per chunk: 64 MiB of float32
CHUNKS = (1 << 32) // CHUNK
WIRES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}


def sweep(wire: np.dtype, isas: list[str], chunks: int) -> dict[str, int]:
    """Differing inputs per instruction set, over the first `chunks` chunks of all float32 patterns."""
    wrong = dict.fromkeys(isas, 0)
    patterns = np.arange(CHUNK, dtype=np.uint32)
    want_wire, got_wire = np.empty(CHUNK, wire), np.empty(CHUNK, wire)
    for chunk in range(chunks):
        inputs = (patterns + np.uint32(chunk * CHUNK)).view(np.float32)
        want_kept = inputs.copy()
        _numpy.encode_into(want_wire, want_kept)
        for isa in isas:
            _codec.use(isa)
            got_kept = inputs.copy()
            kernels.encode_into(got_wire, got_kept)
            differ = (got_wire.view(np.uint16) != want_wire.view(np.uint16)) | (
                got_kept.view(np.uint32) != want_kept.view(np.uint32))
            wrong[isa] += int(np.count_nonzero(differ))
    return wrong


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=positive_int, default=CHUNKS,
                        help=f"chunks of 2^24 patterns, 1..{CHUNKS} (all {CHUNKS})")
    args = parser.parse_args(argv)
    if args.chunks > CHUNKS:  # (past the last pattern a chunk's start overflows uint32)
        parser.error(f"--chunks must be at most {CHUNKS} (every pattern), got {args.chunks}")
    isas, active = _codec.isas(), _codec.isa()
    print(f"# {args.chunks * CHUNK} float32 patterns, encode_into vs kernels._numpy, ISAs {', '.join(isas)}")
    try:
        for name, wire in WIRES.items():
            start = time.perf_counter()
            wrong = sweep(wire, isas, args.chunks)
            cells = ", ".join(f"{isa}: {count} differ" for isa, count in wrong.items())
            print(f"{name}: {cells} ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        _codec.use(active)


if __name__ == "__main__":
    main()
