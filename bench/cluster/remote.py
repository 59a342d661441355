"""The lab's ``ssh``: hydra calls it as ``ssh [-x] HOST COMMAND`` to start a proxy on a node.

Like ssh, it joins COMMAND into one shell line (hydra quotes its arguments for that) and
runs it with ``sh -c``, here inside the namespace of the node whose address is HOST, in a
UTS namespace of its own whose hostname is the node's namespace name.

Usage: python -m bench.cluster.remote LAB [-x ...] HOST COMMAND...
"""
from __future__ import annotations

import os
import sys

from .layout import Layout

__all__ = ["main"]

_SET_HOSTNAME = 'hostname "$0" && exec sh -c "$1"'


def main(argv: list[str]) -> None:
    """Replace this process with COMMAND inside HOST's node."""
    layout, rest = Layout(argv[0]), argv[1:]
    while rest and rest[0].startswith("-"):  # ssh's options (hydra passes -x)
        rest = rest[1:]
    if len(rest) < 2:
        sys.exit(f"usage: python -m bench.cluster.remote LAB [-x] HOST COMMAND..., got {argv}")
    node = layout.node(layout.node_of(rest[0]))
    os.execvp("ip", ["ip", "netns", "exec", node, "unshare", "--uts", "sh", "-c",
                     _SET_HOSTNAME, node, " ".join(rest[1:])])


if __name__ == "__main__":
    main(sys.argv[1:])
