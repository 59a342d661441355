"""A lab of emulated cluster nodes on one machine: network namespaces with shaped links.

- :mod:`bench.cluster.lab` — ``Lab``: make nodes, run mpiexec across them, cut a link,
  tear down.
- :mod:`bench.cluster.netns` — the ip/tc plumbing (namespaces, bridge, veth, tbf).
- :mod:`bench.cluster.layout` — a lab's names and addresses.
- :mod:`bench.cluster.registry` — which labs exist and whether their owner lives.
- :mod:`bench.cluster.hydra`, :mod:`bench.cluster.remote` — mpiexec across the nodes.
- :mod:`bench.cluster.linkcheck` — measures the links (the lab's self-check).
- :mod:`bench.cluster.summary` — benchmark runs on a lab against the link bound.
- :mod:`bench.cluster.cli` — the ``collectives-cluster`` command.

See ``docs/cluster.md``.

Example::

    from bench.cluster import Lab

    with Lab(nodes=2, link="1gbit") as lab:
        lab.mpiexec(["python", "-m", "bench.allreduce_perf"], ppn=2).check()
"""
from .errors import LabError
from .lab import Job, Lab, Outcome
from .rate import LinkRate

__all__ = ["Job", "Lab", "LabError", "LinkRate", "Outcome"]
