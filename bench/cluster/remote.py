"""The lab's ``ssh``: hydra calls it as ``ssh [-x] HOST COMMAND`` to start a proxy on a node.

Like ssh, it joins COMMAND into one shell line (hydra quotes its arguments for that) and
runs it with ``sh -c``, here inside the namespace of the node whose address is HOST, with
a hostname of its own (the node's namespace name, in a new UTS namespace) and a /dev/shm of
its own (a tmpfs in a new mount namespace). All ranks of a node descend from that one
proxy, so they share the node's /dev/shm, which MPICH's shared memory uses, as on a real
node; it vanishes with the node's last process, so ranks that were killed leave no shared
memory segments behind.

Usage: python -m bench.cluster.remote LAB [-x ...] HOST COMMAND...
"""
from __future__ import annotations

import os
import sys

from .layout import Layout

__all__ = ["main"]

_AS_NODE = 'hostname "$0" && mount -t tmpfs -o mode=1777 "$0-shm" /dev/shm && exec sh -c "$1"'


def main(argv: list[str]) -> None:
    """Replace this process with COMMAND inside HOST's node."""
    layout, rest = Layout(argv[0]), argv[1:]
    while rest and rest[0].startswith("-"):  # ssh's options (hydra passes -x)
        rest = rest[1:]
    if len(rest) < 2:
        sys.exit(f"usage: python -m bench.cluster.remote LAB [-x] HOST COMMAND..., got {argv}")
    node = layout.node(layout.node_of(rest[0]))
    os.execvp("ip", ["ip", "netns", "exec", node, "unshare", "--uts", "--mount", "sh", "-c",
                     _AS_NODE, node, " ".join(rest[1:])])


if __name__ == "__main__":
    main(sys.argv[1:])
