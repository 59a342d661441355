"""A lab of emulated nodes: network namespaces on one bridge, links shaped both ways.

Each node is a network namespace with one interface on the lab's switch (a bridge in a
namespace of its own). A link rate caps each node's link in both directions, as a NIC's
full-duplex link is capped: a tbf on the node's egress bounds everything leaving the node,
and a tbf on the switch port's egress bounds everything entering it (so two nodes sending
to a third share its one link). mpiexec runs in a head namespace on the switch, unshaped.

The lab lives as long as its ``with`` block, and is torn down however the block ends: an
exception, Ctrl-C, SIGTERM or SIGHUP (turned into SystemExit while the lab lives). A lab
whose creator was killed outright, even while building it, is torn down by
``collectives-cluster down`` (or by the next lab made on the machine, which removes stale
labs first).

Example::

    with Lab(nodes=2, link="1gbit") as lab:
        result = lab.mpiexec(["python", "-m", "tests.workers.allreduce_matrix", "ring"],
                             ppn=[3, 2], timeout=300)
        result.check()
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import hydra, netns, registry
from .errors import LabError
from .layout import BRIDGE, IFACE, MAX_NODES, PREFIX_LENGTH, Layout
from .rate import LinkRate

__all__ = ["ENDING_SIGNALS", "Job", "Lab", "Outcome", "exiting_on_signals", "parse_ppn",
           "pids_of", "remove_lab"]

_LAUNCHER_EXIT_WAIT = 5.0  # seconds mpiexec gets to end once its ranks are killed
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `kill`, `timeout`; a closed terminal


@dataclass(frozen=True)
class Outcome:
    """How a launch ended: mpiexec's exit status and output, and whether it timed out.

    ``timed_out``: mpiexec had not ended within the timeout, so the lab ended it and every
    process on the nodes (``returncode`` is then -9).
    """

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    elapsed: float

    @property
    def signal(self) -> int | None:
        """The signal that killed mpiexec (from outside: ``down``, ``kill -9``), if one did."""
        return -self.returncode if self.returncode < 0 else None

    @property
    def exit_status(self) -> int:
        """mpiexec's exit status as a shell gives it: 128 + the signal that killed it."""
        return self.returncode if self.signal is None else 128 + self.signal

    def check(self) -> "Outcome":
        """Self if mpiexec exited 0; else LabError with the command and the tail of its output."""
        if self.returncode == 0:
            return self
        what = (f"did not end within its timeout ({self.elapsed:.0f} s)" if self.timed_out
                else f"was killed by signal {self.signal}" if self.signal is not None
                else f"exited {self.returncode}")
        raise LabError(f"{' '.join(self.command)} {what}\n--- stdout ---\n"
                       f"{self.stdout[-20000:]}\n--- stderr ---\n{self.stderr[-20000:]}")


class Job:
    """An mpiexec started on a lab; ``wait`` bounds it.

    Example::

        job = lab.start([...], ppn=2)
        outcome = job.wait(timeout=60)
    """

    def __init__(self, lab: "Lab", command: list[str], process: subprocess.Popen):
        self._lab = lab
        self.command = tuple(command)
        self.process = process
        self._started = time.monotonic()

    def wait(self, timeout: float | None = None) -> Outcome:
        """Wait for mpiexec; past ``timeout`` seconds, end it and every process of the nodes.

        mpiexec may never end on its own when a node's proxy is unreachable (a cut link:
        it waits for that proxy forever), so a timeout is the launcher's bound.
        """
        timed_out = False
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with _uninterrupted():
                self._lab.kill_processes()
            stdout, stderr = self.process.communicate(timeout=_LAUNCHER_EXIT_WAIT)
        except BaseException:  # Ctrl-C, SIGTERM: end the job, reap mpiexec, go on unwinding
            with _uninterrupted():  # (a second signal aborted the kill: processes lived on)
                self._lab.kill_processes()
                self.process.wait(timeout=_LAUNCHER_EXIT_WAIT)
            raise
        return Outcome(command=self.command, returncode=self.process.returncode,
                       stdout=stdout or "", stderr=stderr or "", timed_out=timed_out,
                       elapsed=time.monotonic() - self._started)


class Lab:
    """``nodes`` emulated nodes whose links carry ``link`` (e.g. "1gbit") each way.

    ``link=None`` (or "none") leaves the links unshaped (fast, for correctness tests).
    ``keep=True`` makes a lab that outlives this process (``collectives-cluster up``);
    otherwise the lab belongs to this process and is stale once it is gone.
    """

    def __init__(self, nodes: int, link: str | LinkRate | None = None, *, keep: bool = False):
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}, got {nodes}")
        require_root_and_tools()
        for record in remove_stale_labs():
            print(f"collectives-cluster: removed stale lab {record.describe()}", file=sys.stderr)
        rate = LinkRate.parse(link) if isinstance(link, str) else link
        self._attach(_unused_layout(), nodes, rate)
        # Recorded before the first namespace, so a crash leaves a findable lab; owned by
        # this process until it is built, so a build killed outright leaves a stale one.
        record = registry.Record(name=self.name, nodes=nodes, link=str(self.rate or "none"),
                                 owner=registry.Owner.current(), created=time.time())
        registry.save(record)
        with exiting_on_signals():
            try:
                self._build()
                if keep:
                    registry.save(dataclasses.replace(record, owner=None))
            except BaseException:
                remove_lab(self.name)
                raise

    @classmethod
    def existing(cls, name: str) -> "Lab":
        """The lab ``name`` made earlier (e.g. by ``collectives-cluster up``)."""
        require_root_and_tools()
        record = registry.load(Layout(name).name)
        if record is None:
            raise LabError(f"there is no lab {name}: `collectives-cluster status` lists the labs")
        lab = cls.__new__(cls)
        lab._attach(Layout(name), record.nodes, LinkRate.parse(record.link))
        return lab

    def _attach(self, layout: Layout, nodes: int, rate: LinkRate | None) -> None:
        self.layout, self.nodes, self.rate = layout, nodes, rate

    @property
    def name(self) -> str:
        return self.layout.name

    def _build(self) -> None:
        layout = self.layout
        netns.add_namespace(layout.switch)
        netns.add_bridge(layout.switch, BRIDGE)
        netns.add_namespace(layout.head)
        netns.add_port(layout.switch, BRIDGE, layout.head_port, machine=layout.head,
                       iface=IFACE, address=f"{layout.head_address}/{PREFIX_LENGTH}")
        for i in range(self.nodes):
            netns.add_namespace(layout.node(i))
            netns.add_port(layout.switch, BRIDGE, layout.port(i), machine=layout.node(i),
                           iface=IFACE, address=f"{layout.address(i)}/{PREFIX_LENGTH}")
            if self.rate is not None:
                netns.shape(layout.node(i), IFACE, self.rate)  # what leaves node i
                netns.shape(layout.switch, layout.port(i), self.rate)  # what enters node i
        hydra.write_launcher(registry.directory(layout.name), layout.name)

    def __enter__(self) -> "Lab":
        self._signals = exiting_on_signals()
        self._signals.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._signals.__exit__(*exc_info)
        self.down()

    def down(self) -> None:
        """Tear the lab down: its processes, namespaces (the bridge and links with them), record.

        Ctrl-C, SIGTERM and SIGHUP wait until it is done.
        """
        with _uninterrupted():
            remove_lab(self.name)

    def start(self, command: Sequence[str], *, ppn: int | Sequence[int],
              env: Mapping[str, str] | None = None, capture: bool = True,
              **popen: Any) -> Job:
        """Start ``command`` on ``ppn`` ranks per node under mpiexec; see ``mpiexec``."""
        counts = self.ranks_per_node(ppn)
        argv = hydra.mpiexec_command(self.layout, counts, command,
                                     launcher=hydra.launcher_path(registry.directory(self.name)))
        if capture:
            popen.setdefault("stdout", subprocess.PIPE)
            popen.setdefault("stderr", subprocess.PIPE)
        # torch.distributed's rendezvous (MASTER_ADDR) is rank 0's node, as on a cluster
        extra = {"MASTER_ADDR": self.layout.address(0), **(env or {})}
        process = subprocess.Popen(argv, env=hydra.rank_environment(extra), text=True,
                                   start_new_session=True, **popen)
        return Job(self, argv, process)

    def mpiexec(self, command: Sequence[str], *, ppn: int | Sequence[int],
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                capture: bool = True, **popen: Any) -> Outcome:
        """Run ``command`` on the nodes and wait for mpiexec, at most ``timeout`` seconds.

        ``ppn``: ranks per node, one count for every node or one per node (``[3, 2]``: ranks
        0-2 on node 0, 3-4 on node 1; a shorter list uses the first nodes). ``env`` is added
        to this process's environment and the lab's routing (hydra.RANK_ENVIRONMENT).
        ``capture=False`` lets the output through instead of into the Outcome.
        """
        return self.start(command, ppn=ppn, env=env, capture=capture, **popen).wait(timeout)

    def ranks_per_node(self, ppn: int | Sequence[int]) -> list[int]:
        """``ppn`` as one count per node used: ``2`` on 3 nodes is [2, 2, 2]."""
        counts = [ppn] * self.nodes if isinstance(ppn, int) else list(ppn)
        if not counts or len(counts) > self.nodes or any(c < 1 for c in counts):
            raise ValueError(f"ppn {ppn} does not fit lab {self.name} of {self.nodes} nodes: "
                             "give one count >= 1, or one per node for at most "
                             f"{self.nodes} nodes (e.g. 3,2)")
        return counts

    def cut(self, node: int) -> None:
        """Take node ``node``'s link down (its switch port), as if its cable were pulled."""
        netns.set_link(self.layout.switch, self.layout.port(node), up=False)

    def pids(self) -> list[int]:
        """Every process in the lab's namespaces: mpiexec, proxies, ranks."""
        return pids_of(self.name)

    def kill_processes(self) -> None:
        """SIGKILL every process in the lab (mpiexec first, so it starts nothing new)."""
        _kill_processes(_namespaces_of(self.name))


def parse_ppn(text: str) -> int | list[int]:
    """Ranks per node from the command line: ``2`` as 2, ``3,2`` as [3, 2]."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(count < 1 for count in counts):
        raise ValueError(f"ranks per node {text!r} is neither a count >= 1 (2) nor one count "
                         "per node (3,2)")
    return counts[0] if len(counts) == 1 and "," not in text else counts


def pids_of(name: str) -> list[int]:
    """Every process in lab ``name``'s namespaces."""
    return [pid for ns in _namespaces_of(name) for pid in netns.pids(ns)]


def require_root_and_tools() -> None:
    """LabError naming what is missing to make a lab: root, ip, tc, unshare."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth pairs, tc shapers): "
                       "run it as root, e.g. sudo .venv/bin/collectives-cluster ...")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise LabError(f"the lab needs `{tool}` on PATH: install {package} "
                           f"(apt-get install {package})")


def remove_lab(name: str) -> None:
    """Tear down lab ``name`` whoever made it: kill its processes, delete namespaces, record."""
    namespaces = _namespaces_of(name)
    _kill_processes(namespaces)
    for ns in namespaces:
        netns.delete_namespace(ns)
    registry.remove(name)


def remove_stale_labs() -> list[registry.Record]:
    """Tear down every lab whose owner is gone; their records."""
    stale = [record for record in registry.records() if record.stale]
    for record in stale:
        remove_lab(record.name)
    return stale


def _kill_processes(namespaces: Sequence[str]) -> None:
    """SIGKILL every process in ``namespaces``, in order (the head first: no new proxies)."""
    for ns in namespaces:
        netns.kill_all(ns)


def _namespaces_of(name: str) -> list[str]:
    """Lab ``name``'s namespaces that exist: the head, the nodes, the switch last."""
    layout = Layout(name)
    mine = [ns for ns in netns.namespaces() if layout.owns(ns)]
    return sorted(mine, key=lambda ns: (ns != layout.head, ns == layout.switch, ns))


def _unused_layout() -> Layout:
    """A fresh lab name that no record and no namespace uses."""
    taken = {record.name for record in registry.records()}
    while (layout := Layout.fresh()).name in taken:
        pass
    return layout


def exiting_on_signals() -> contextlib.AbstractContextManager:
    """Inside, SIGTERM and SIGHUP raise SystemExit(128 + signal), as Ctrl-C raises
    KeyboardInterrupt: ``with`` blocks and ``finally`` (a Job's wait, which ends the lab's
    processes) run instead of the process dying at once."""
    return _handling(ENDING_SIGNALS, _exit_on_signal)


def _uninterrupted() -> contextlib.AbstractContextManager:
    """Inside, Ctrl-C, SIGTERM and SIGHUP are ignored: for a teardown that must finish."""
    return _handling((signal.SIGINT, *ENDING_SIGNALS), signal.SIG_IGN)


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _handling(signals: Sequence[int], handler) -> Iterator[None]:
    """``handler`` for ``signals`` while inside (main thread only: elsewhere, nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
