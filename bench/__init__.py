"""Benchmarks over the collectives library, in the manner of nccl-tests.

- :mod:`bench.harness` — sizes, warm-up, timing, #wrong checks, algbw/busbw, table, JSON;
  generic over the measured operation.
- :mod:`bench.allreduce_perf` — the ``collectives-bench`` command: all-reduce per algorithm.
- :mod:`bench.launch` — starts a tool on local MPI ranks when run outside ``mpiexec``.

See ``docs/benchmarks.md``.
"""
