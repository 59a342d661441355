"""Every algorithm across a lab's nodes: identical bits on every rank, equal to NumPy's.

Ranks run on emulated nodes (bench/cluster, needs root): hydra places them, MPI's
shared-memory split finds the nodes (no COLLECTIVES_LOCAL_SIZE), and the worker checks
that the communicator's node sizes are the lab's. Bytes between nodes cross TCP on the
links, bytes inside a node MPICH's shared memory. The links are unshaped and the layouts
contiguous only (tests/test_allreduce_mpi.py covers layouts) to keep this quick under load:
about a minute on two busy cores. The rates are test_cluster_links.py's business.
"""
import sys

import pytest

from bench.cluster import Lab
from tests.mpirun import ROOT

ALGORITHMS = "ring,hierarchical,torus2d,halving_doubling,native,auto"
PLACEMENTS = {"2x2": [2, 2], "3x2": [2, 2, 2], "2x3": [3, 3], "3+2": [3, 2]}
ENV = {"PYTHONPATH": str(ROOT), "COLLECTIVES_LOCAL_SIZE": "", "COLLECTIVES_TIMEOUT": "120"}


@pytest.fixture(scope="module")
def lab():
    with Lab(nodes=3) as lab:
        yield lab


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_algorithm_across_nodes(lab, placement):
    ppn = PLACEMENTS[placement]
    command = [sys.executable, "-m", "tests.workers.allreduce_matrix", ALGORITHMS, "--medium",
               "--large", "--layouts", "contiguous", "--expect-nodes", ",".join(map(str, ppn))]
    lab.mpiexec(command, ppn=ppn, env=ENV, timeout=300).check()
