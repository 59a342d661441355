"""A lab's names and addresses, all derived from its name.

Every lab has a unique name, ``clab-`` and six hex digits. Its network namespaces are
``<name>-switch`` (the bridge), ``<name>-head`` (where mpiexec runs) and ``<name>-node<i>``.
Each node and the head have one interface, ``eth0``, on the private subnet 10.77.0.0/24
(head .1, node i .(i + 2)); the switch holds the bridge ``switch`` and one port per
machine, ``head`` and ``node<i>``. Interfaces and addresses live only inside the lab's
namespaces, so labs never collide with each other or with the host.

Example::

    layout = Layout("clab-1a2b3c")
    layout.node(1)             # 'clab-1a2b3c-node1'
    layout.address(1)          # '10.77.0.3'
    layout.node_of("10.77.0.3")  # 1
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

__all__ = ["BRIDGE", "IFACE", "Layout", "MAX_NODES", "PREFIX", "PREFIX_LENGTH", "SUBNET",
           "is_lab_name", "lab_of"]

PREFIX = "clab-"
NAME = re.compile(r"clab-[0-9a-f]{6}")
_NAMESPACE = re.compile(r"(clab-[0-9a-f]{6})-.+")
SUBNET = "10.77.0"
PREFIX_LENGTH = 24
IFACE = "eth0"  # a machine's interface, inside its namespace
BRIDGE = "switch"
MAX_NODES = 250  # node addresses .2 .. .251


def is_lab_name(text: str) -> bool:
    return NAME.fullmatch(text) is not None


def lab_of(namespace: str) -> str | None:
    """The name of the lab that ``namespace`` belongs to; None for any other namespace."""
    match = _NAMESPACE.fullmatch(namespace)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Layout:
    """The names and addresses of the lab called ``name``."""

    name: str

    def __post_init__(self) -> None:
        if not is_lab_name(self.name):
            raise ValueError(f"{self.name!r} is not a lab name (clab- and six hex digits); "
                             "`collectives-cluster status` lists the labs")

    @classmethod
    def fresh(cls) -> "Layout":
        """A new random name (collisions are checked by the caller)."""
        return cls(PREFIX + secrets.token_hex(3))

    @property
    def switch(self) -> str:
        return f"{self.name}-switch"

    @property
    def head(self) -> str:
        return f"{self.name}-head"

    def node(self, index: int) -> str:
        return f"{self.name}-node{index}"

    def port(self, index: int) -> str:
        """The switch's port for node ``index``."""
        return f"node{index}"

    @property
    def head_port(self) -> str:
        return "head"

    @property
    def head_address(self) -> str:
        return f"{SUBNET}.1"

    def address(self, index: int) -> str:
        if not 0 <= index < MAX_NODES:
            raise ValueError(f"node {index} is outside 0..{MAX_NODES - 1}")
        return f"{SUBNET}.{index + 2}"

    def node_of(self, address: str) -> int:
        """The node index that has ``address``; ValueError for any other address."""
        prefix = f"{SUBNET}."
        last = address[len(prefix):] if address.startswith(prefix) else ""
        if not last.isdigit() or not 2 <= int(last) < MAX_NODES + 2:
            raise ValueError(f"{address!r} is not a node address of lab {self.name} "
                             f"({SUBNET}.2 and up)")
        return int(last) - 2

    def owns(self, namespace: str) -> bool:
        """Whether ``namespace`` is one of this lab's."""
        return namespace.startswith(f"{self.name}-")
