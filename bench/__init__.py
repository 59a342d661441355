"""Benchmarks over the collectives library, in the manner of nccl-tests.

- :mod:`bench.harness` — warm-up, timing, repeats, #wrong checks, algbw/busbw, rows;
  generic over the measured operation (the op contract).
- :mod:`bench.ops` — the measured collectives, one module each (allreduce, reduce_scatter,
  allgather, broadcast, reduce, alltoall), each with MPI's own call as the ``mpi`` baseline.
- :mod:`bench.reference` — the data every tool feeds the library and its closed-form
  reference: element codes, value tables, tolerances, dtypes.
- :mod:`bench.prediction` — the cost model's time for an all-reduce call.
- :mod:`bench.table`, :mod:`bench.environment`, :mod:`bench.sizes` — the text table and
  progress, the environment and JSON, message sizes.
- :mod:`bench.allreduce_perf` — the ``collectives-bench`` command.
- :mod:`bench.report` — the ``collectives-report`` command (a package, one module a job).
- :mod:`bench.calibrate` — ``collectives-bench --calibrate``: the cost model's constants.
- :mod:`bench.launch` — starts a tool on local MPI ranks (or a lab) when run outside ``mpiexec``.
- :mod:`bench.soak`, :mod:`bench.train_step`, :mod:`bench.shm_perf`,
  :mod:`bench.agreement_cost` — other measurements; :mod:`bench.cluster` — the lab.

See ``docs/benchmarks.md``.
"""
