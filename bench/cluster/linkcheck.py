"""The lab's self-check: bytes between nodes move at the link rate, bytes inside a node do not.

Run on a lab's ranks (``check`` does it: 2 ranks on node 0, 1 on every other node); the
first rank of each node sends or receives, with MPI point to point on the ranks' usual
environment, so it measures what the library's messages get. Each pattern is timed
``repeat`` times and the fastest kept (the link's capacity: a CPU busy with other jobs can
only slow a run down, never speed it past the shaper); its rate is the bytes moved over the
time until the last receiver has them, and ``x link`` divides that by what the shaped links allow. Ranks
that wait (for the start, for the others, or with nothing to move) sleep between polls.

=========================  =========================================  ================
pattern                    who sends                                  links that limit
=========================  =========================================  ================
one way                    node 0 -> node 1                           1
both ways                  node 0 -> node 1 and node 1 -> node 0      2 (one each way)
into node 0                every other node -> node 0 at once         1 (node 0's in)
out of node 0              node 0 -> every other node at once         1 (node 0's out)
inside node 0              rank 0 -> the next rank on node 0          none (shared memory)
=========================  =========================================  ================

"into node 0" proves the shaper on the switch port, "out of node 0" the one on the node.
TCP over Ethernet carries 1448 payload bytes per 1514-byte frame, so expect ``x link`` near
0.95 on a shaped link.

Usage: mpiexec ... python -m bench.cluster.linkcheck [--bytes N] [--repeat R] [--link RATE]
                                                     [--json PATH]

Example::

    with Lab(nodes=3, link="100mbit") as lab:
        for row in check(lab):
            print(row["pattern"], row["x_link"])
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["check", "main"]

SECONDS_PER_TRANSFER = 0.3  # the default message size moves in about this long at the rate


def default_bytes(bytes_per_second: float | None) -> int:
    """A message that takes ~0.3 s on the link: 1 MiB .. 64 MiB (64 MiB unshaped)."""
    if bytes_per_second is None:
        return 64 << 20
    return min(64 << 20, max(1 << 20, int(bytes_per_second * SECONDS_PER_TRANSFER)))


def check(lab, *, nbytes: int | None = None, repeat: int = 3,
          timeout: float = 300, capture: bool = True) -> list[dict]:
    """Run the check on ``lab`` (at least 2 nodes); one dict per pattern (see ``main``)."""
    if lab.nodes < 2:
        raise ValueError(f"the link check needs at least 2 nodes, lab {lab.name} has {lab.nodes}")
    rate = lab.rate.bytes_per_second if lab.rate is not None else None
    with tempfile.TemporaryDirectory(prefix="linkcheck-") as folder:
        out = Path(folder) / "links.json"
        command = [sys.executable, "-m", "bench.cluster.linkcheck", "--json", str(out),
                   "--bytes", str(nbytes or default_bytes(rate)), "--repeat", str(repeat),
                   "--link", str(lab.rate or "none")]
        lab.mpiexec(command, ppn=[2] + [1] * (lab.nodes - 1), timeout=timeout,
                    capture=capture).check()
        return json.loads(out.read_text())


def _patterns(leaders: list[int], neighbour: int | None) -> list[tuple[str, list, int]]:
    """(name, [(source, destination), ...], links that limit) for this lab's shape."""
    first, second, rest = leaders[0], leaders[1], leaders[1:]
    patterns = [("one way", [(first, second)], 1),
                ("both ways", [(first, second), (second, first)], 2)]
    if len(leaders) >= 3:
        patterns += [("into node 0", [(r, first) for r in rest], 1),
                     ("out of node 0", [(first, r) for r in rest], 1)]
    if neighbour is not None:
        patterns.append(("inside node 0", [(first, neighbour)], 0))
    return patterns


def _transfer(world, pairs, nbytes: int, buffers: dict) -> float:
    """Every pair's message at once; seconds from the common start until the last arrival."""
    import numpy as np
    from mpi4py import MPI

    _sleep_until_done(world.Ibarrier())
    start = time.perf_counter()
    requests = []
    for source, destination in pairs:
        if world.rank == source:
            requests.append(world.Isend([buffers["send"][:nbytes], MPI.BYTE], destination))
        if world.rank == destination:
            if source not in buffers:
                buffers[source] = np.empty(buffers["send"].size, np.uint8)
            incoming = buffers[source]
            requests.append(world.Irecv([incoming[:nbytes], MPI.BYTE], source))
    MPI.Request.Waitall(requests)
    done = np.array([time.perf_counter() - start if requests else 0.0])
    slowest = np.empty(1)
    _sleep_until_done(world.Iallreduce(done, slowest, op=MPI.MAX))
    return float(slowest[0])


def _sleep_until_done(request) -> None:
    """Wait for ``request`` without spinning: ranks that wait share the cores with those
    that move bytes (a busy MPI wait would take the CPU that TCP needs)."""
    while not request.Test():
        time.sleep(0.001)


def main(argv: list[str] | None = None) -> None:
    """Measure every pattern; rank 0 prints a line each and writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster.linkcheck")
    parser.add_argument("--bytes", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--link", default="none", help="the links' rate, for 'x link'")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    from mpi4py import MPI

    from .rate import LinkRate

    rate = LinkRate.parse(args.link)
    nbytes = args.bytes or default_bytes(rate.bytes_per_second if rate else None)
    world = MPI.COMM_WORLD
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    node_leader = world.allgather(node.allreduce(world.rank, op=MPI.MIN))
    leaders = sorted(set(node_leader))
    if len(leaders) < 2:
        raise SystemExit("the link check needs ranks on at least 2 nodes")
    neighbour = next((r for r, lead in enumerate(node_leader) if lead == 0 and r != 0), None)
    buffers = {"send": np.ones(nbytes, np.uint8)}
    rows = []
    if world.rank == 0:
        print(f"# link check: {len(leaders)} nodes, link {rate or 'unshaped'}, "
              f"{nbytes / 2**20:.1f} MiB messages, fastest of {args.repeat}\n"
              f"# {'pattern':<14} {'MB/s':>9} {'x link':>7}", flush=True)
    for name, pairs, links in _patterns(leaders, neighbour):
        _transfer(world, pairs, 1024, buffers)  # connect the pairs before timing
        seconds = min(_transfer(world, pairs, nbytes, buffers) for _ in range(args.repeat))
        speed = nbytes * len(pairs) / seconds
        x_link = speed / (links * rate.bytes_per_second) if rate and links else None
        rows.append({"pattern": name, "pairs": pairs, "bytes": nbytes, "seconds": seconds,
                     "bytes_per_second": speed, "limiting_links": links, "x_link": x_link})
        if world.rank == 0:
            shown = "-" if x_link is None else f"{x_link:.2f}"
            print(f"  {name:<14} {speed / 1e6:9.1f} {shown:>7}", flush=True)
    if world.rank == 0 and args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
