"""collectives: all-reduce algorithms you can see and choose.

Example::

    import collectives
    comm = collectives.init()                      # under mpiexec / srun
    y = comm.allreduce(x, op="avg", algorithm="ring")
"""
from .bootstrap import init
from .communicator import Communicator
from .errors import CollectiveError, CollectiveTimeout, MismatchError, NonFiniteError, PeerError
from .gradsync import GradSync, broadcast_parameters
from .sharding import ShardedSync
from .deterministic import reference_reduce
from .options import ALGORITHMS, COMPRESSIONS, DTYPES, Op
from .topology import Topology

__all__ = [
    "init",
    "Communicator",
    "Topology",
    "Op",
    "ALGORITHMS",
    "COMPRESSIONS",
    "DTYPES",
    "CollectiveError",
    "MismatchError",
    "CollectiveTimeout",
    "NonFiniteError",
    "PeerError",
    "GradSync",
    "ShardedSync",
    "reference_reduce",
    "broadcast_parameters",
]

__version__ = "0.1.0"
