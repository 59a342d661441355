"""collectives-report: measure every algorithm beside MPI's own, hold the cost model against
it, predict at scale.

1. Measures ring, hierarchical, torus2d and halving_doubling from 64 KiB to 64 MiB (or
   --max-bytes), each point the median of nine timed runs, in one round-robin with the
   calibration's micro-benchmarks (bench/calibrate.py; a whole calibration, to 64 MiB
   whatever --max-bytes): the simulator's predictions on that calibration are held against
   calls timed at the same moments, and, when the tuning file has an entry for this np, on
   the tuning file's too. Each call is timed twice in every run, so
   the report also shows how far two measurements of one call differ on this host. Without
   an entry, this calibration is written to the tuning file.
2. Measures MPI's own all-reduce (mpi) and all algorithms x message sizes x compression
   (none, fp16) with the benchmark harness and the all-reduce op (bench/ops/allreduce.py),
   each row beside its prediction, a progress bar on stderr.
3. Predicts busbw on named cluster shapes (or those of --cluster FILE) with the sizes where
   the ranking of algorithms changes.
4. Writes DIR/report.md, DIR/results.json (nccl-tests-like rows plus predictions) and PNGs.
docs/report.md explains how to read it.

One module per job: measure (the sweep and the accuracy points), model (the model held
against them, at scale), clusters (the shapes), plots, markdown, results (the JSON), cli.

Example::

    collectives-report --quick --out OUT                 # starts 2 ranks itself
    collectives-report --np 4 --out OUT --cluster my-clusters.json
    collectives-report --accuracy-only --np 4 --out OUT  # model vs measurement only
"""
from bench.report.cli import main
from bench.report.clusters import Scale, default_clusters, load_clusters
from bench.report.measure import ACCURACY_ALGORITHMS
from bench.report.model import crossovers

__all__ = ["ACCURACY_ALGORITHMS", "Scale", "crossovers", "default_clusters", "load_clusters",
           "main"]
