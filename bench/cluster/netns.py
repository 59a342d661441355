"""The plumbing: network namespaces, a bridge, veth pairs and tbf shapers, through ip and tc.

Every call names the namespace it acts in (``ip -n NS``, ``tc -n NS``), so nothing in the
host's own namespace is touched. A failing command raises LabError with its stderr and a
hint at what to do.

Example::

    add_namespace("clab-1a2b3c-switch")
    add_bridge("clab-1a2b3c-switch", "switch")
    add_namespace("clab-1a2b3c-node0")
    add_port("clab-1a2b3c-switch", "switch", "node0",
             machine="clab-1a2b3c-node0", iface="eth0", address="10.77.0.2/24")
    shape("clab-1a2b3c-node0", "eth0", LinkRate.parse("1gbit"))
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from .errors import LabError
from .rate import LinkRate

__all__ = ["add_bridge", "add_namespace", "add_port", "delete_namespace", "kill_all",
           "namespaces", "pids", "set_link", "shape"]

_TBF_LATENCY = "200ms"  # the longest a packet may wait in the shaper's queue


def _run(args: Sequence[str], *, hint: str) -> str:
    """Run ``args``; its stdout, or LabError quoting the command, its stderr and ``hint``."""
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LabError(f"{args[0]} is not installed: install iproute2 "
                       "(apt-get install iproute2)") from None
    if proc.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}; "
                       f"{hint}")
    return proc.stdout


def add_namespace(ns: str) -> None:
    """A new network namespace with its loopback up."""
    _run(["ip", "netns", "add", ns],
         hint="the kernel refused a network namespace: run as root on a kernel with network "
              "namespaces (CONFIG_NET_NS; in a container, start it with --privileged)")
    _run(["ip", "-n", ns, "link", "set", "lo", "up"], hint="the new namespace is unusable")


def add_bridge(ns: str, bridge: str) -> None:
    """A bridge ``bridge`` in ``ns``, up."""
    _run(["ip", "-n", ns, "link", "add", bridge, "type", "bridge"],
         hint="the kernel has no bridge support: load it (modprobe bridge)")
    _run(["ip", "-n", ns, "link", "set", bridge, "up"], hint="the bridge did not come up")


def add_port(ns: str, bridge: str, port: str, *, machine: str, iface: str,
             address: str) -> None:
    """A veth pair: ``port`` on ``bridge`` in ``ns``, ``iface`` with ``address`` in ``machine``.

    Both ends are made in place (``ip -n NS link add ... peer ... netns MACHINE``), so no
    interface ever appears in the host's namespace.
    """
    _run(["ip", "-n", ns, "link", "add", port, "type", "veth", "peer", "name", iface,
          "netns", machine], hint="the kernel has no veth support: load it (modprobe veth)")
    _run(["ip", "-n", ns, "link", "set", port, "master", bridge, "up"],
         hint="the port could not join the bridge")
    _run(["ip", "-n", machine, "addr", "add", address, "dev", iface],
         hint="the address could not be set")
    _run(["ip", "-n", machine, "link", "set", iface, "up"], hint="the interface did not come up")


def shape(ns: str, iface: str, rate: LinkRate) -> None:
    """Cap what leaves ``iface`` in ``ns`` at ``rate`` (a tbf as the root qdisc)."""
    _run(["tc", "-n", ns, "qdisc", "add", "dev", iface, "root", "tbf", "rate", rate.tc,
          "burst", str(rate.burst_bytes), "latency", _TBF_LATENCY],
         hint="tc refused the tbf qdisc: load it (modprobe sch_tbf), or make the lab without "
              "a link rate (--link none)")


def set_link(ns: str, iface: str, *, up: bool) -> None:
    """Bring ``iface`` in ``ns`` up or down."""
    _run(["ip", "-n", ns, "link", "set", iface, "up" if up else "down"],
         hint=f"is {ns} still there? (`ip netns list`)")


def namespaces() -> list[str]:
    """Every network namespace name (``ip netns list``)."""
    out = _run(["ip", "netns", "list"], hint="ip cannot list network namespaces")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pids(ns: str) -> list[int]:
    """The processes whose network namespace is ``ns``; none when ``ns`` is gone."""
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=60)
    return [int(word) for word in proc.stdout.split()] if proc.returncode == 0 else []


def kill_all(ns: str, *, attempts: int = 100) -> None:
    """SIGKILL every process in ``ns``, again until none is left (a parent may fork meanwhile)."""
    for _ in range(attempts):
        left = pids(ns)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    raise LabError(f"processes {pids(ns)} in {ns} survive SIGKILL; end them and run "
                   "`collectives-cluster down` again")


def delete_namespace(ns: str) -> None:
    """Remove ``ns`` (its interfaces go with it); nothing when it is gone, even meanwhile."""
    try:
        _run(["ip", "netns", "delete", ns], hint="end its processes first (kill_all)")
    except LabError:
        if ns in namespaces():  # not removed by someone else in the meantime
            raise
