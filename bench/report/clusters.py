"""Cluster shapes the report predicts on: built-in ones, or those of a --cluster file.

Example::

    shapes = load_clusters(json.loads(Path("my-clusters.json").read_text()))
    shapes[0].cluster.size        # ranks
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RANKS", "Scale", "default_clusters", "load_clusters"]

MAX_RANKS = 16384  # simulated at every size: 100,000 x 8 had not priced one size in 60 s
LIMIT = 1e6  # alpha_us and rates above this are typos (1e308 us gave inf in the table)
RATE_MIN = 1e-6  # GB/s (1 kB/s): rates below this are typos (1e-300 GB/s gave 0.0 everywhere)
FIELDS = frozenset({"name", "nodes", "ranks_per_node", "intra", "inter",
                    "reduce_gbytes_per_s", "grid", "torus_links"})
LINK_FIELDS = frozenset({"alpha_us", "gbytes_per_s", "zero_copy"})


@dataclass(frozen=True)
class Scale:
    """A named cluster shape for the at-scale section."""

    name: str
    cluster: Any  # collectives.costmodel.ClusterModel


def default_clusters() -> list[Scale]:
    """16 nodes x 8 GPUs (NVLink 450 GB/s, IB 400 Gb/s); 1024 ranks on a 32x32 torus; 4096 ranks."""
    return load_clusters({"clusters": [
        {"name": "128 GPUs: 16 nodes x 8, NVLink 450 GB/s + IB 400 Gb/s", "nodes": 16,
         "ranks_per_node": 8, "intra": {"alpha_us": 3, "gbytes_per_s": 450},
         "inter": {"alpha_us": 6, "gbytes_per_s": 50}, "reduce_gbytes_per_s": 1000},
        {"name": "1024 ranks: 32x32 torus, 100 GB/s links", "nodes": 32, "ranks_per_node": 32,
         "grid": [32, 32], "torus_links": True, "intra": {"alpha_us": 2, "gbytes_per_s": 100},
         "inter": {"alpha_us": 2, "gbytes_per_s": 100}, "reduce_gbytes_per_s": 1000},
        {"name": "4096 GPUs: 512 nodes x 8, NVLink 450 GB/s + IB 400 Gb/s", "nodes": 512,
         "ranks_per_node": 8, "intra": {"alpha_us": 3, "gbytes_per_s": 450},
         "inter": {"alpha_us": 6, "gbytes_per_s": 50}, "reduce_gbytes_per_s": 1000},
    ]})


def load_clusters(document: Mapping[str, Any]) -> list[Scale]:
    """Cluster shapes from a --cluster document (see docs/report.md for the format)."""
    listed = document.get("clusters", ()) if isinstance(document, Mapping) else None
    if not isinstance(listed, (list, tuple)):
        raise ValueError('a cluster file is an object {"clusters": [{...}, ...]}')
    _known(document, frozenset({"clusters"}), "the cluster file")
    shapes = [_shape(entry) for entry in listed]
    if not shapes:
        raise ValueError("the cluster file lists no clusters: {\"clusters\": [{...}, ...]}")
    names = [shape.name for shape in shapes]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ValueError(f"name {twice!r} names two clusters: each needs its own")
    return shapes


def _shape(entry: Any) -> Scale:
    """One cluster of the file, every field checked."""
    from collectives.costmodel import ClusterModel, LinkModel

    if not isinstance(entry, Mapping):
        raise ValueError(f"a cluster is an object, got {entry!r}")
    try:
        name = _name(entry)
        _known(entry, FIELDS, f"cluster {name!r}")
        for key in ("intra", "inter"):  # (null was "TypeError: 'NoneType' object is not
            if not isinstance(entry[key], Mapping):  # subscriptable": the 84th review)
                raise ValueError(f"cluster {name!r}: {key} must be an object {{alpha_us, "
                                 f"gbytes_per_s}}, got {entry[key]!r}")
            _known(entry[key], LINK_FIELDS, f"cluster {name!r} {key}")
        links = {key: LinkModel.from_bandwidth(
                     alpha_us=_number(entry[key], "alpha_us", low=0.0),
                     gbytes_per_s=_number(entry[key], "gbytes_per_s", low=RATE_MIN),
                     zero_copy=_flag(entry[key], "zero_copy"))
                 for key in ("intra", "inter")}
        grid = _grid(entry)
        nodes, per_node = _whole(entry, "nodes"), _whole(entry, "ranks_per_node")
        if not 2 <= nodes * per_node <= MAX_RANKS:
            raise ValueError(f"cluster {name!r} has {nodes} x {per_node} = {nodes * per_node} "
                             f"ranks; an all-reduce needs at least 2, and at most {MAX_RANKS} "
                             "are simulated")
        if grid is not None and grid[0] * grid[1] != nodes * per_node:  # (the advice was init's)
            raise ValueError(f"cluster {name!r}: grid {grid[0]}x{grid[1]} holds "
                             f"{grid[0] * grid[1]} ranks, but it has {nodes} x {per_node} = "
                             f"{nodes * per_node}: fix the file's \"grid\" (X * Y ranks) or "
                             "leave it out")
        cluster = ClusterModel.uniform(
            nodes=nodes, ranks_per_node=per_node, grid=grid,
            gamma=1 / (_number(entry, "reduce_gbytes_per_s", low=RATE_MIN) * 1e9),
            name=name, torus_links=_flag(entry, "torus_links"), **links)
    except KeyError as missing:
        raise ValueError(f"cluster {entry.get('name', entry)!r} lacks {missing}; needs name, "
                         "nodes, ranks_per_node, intra/inter {alpha_us, gbytes_per_s}, "
                         "reduce_gbytes_per_s (grid, torus_links optional)") from None
    except (TypeError, AttributeError) as error:  # a field of another kind
        raise ValueError(f"cluster {entry.get('name', entry)!r}: {type(error).__name__}: "
                         f"{error}") from None
    return Scale(cluster.name, cluster)


def _known(entry: Mapping[str, Any], fields: frozenset, where: str) -> None:
    """ValueError naming a key of `entry` outside `fields` (a misspelled option is ignored
    silently otherwise)."""
    unknown = sorted(str(key) for key in entry if key not in fields)
    if unknown:
        raise ValueError(f"{where}: unknown field {', '.join(map(repr, unknown))}; the fields "
                         f"are {', '.join(sorted(fields))}")


def _name(entry: Mapping[str, Any]) -> str:
    """entry["name"]: a non-empty string on one line (it becomes a heading of report.md)."""
    value = entry["name"]
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValueError(f"name must be a non-empty string of printable characters (no line "
                         f"breaks), got {value!r}")
    return value


def _flag(entry: Mapping[str, Any], key: str) -> bool:
    """entry[key] as JSON's true or false (False when absent)."""
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _number(entry: Mapping[str, Any], key: str, *, low: float) -> float:
    """entry[key] as a number from low to LIMIT (a float: NaN and inf fail the bounds)."""
    value = entry[key]
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else math.nan  # (compared as it is: float() of a 400-digit int is an OverflowError)
    if not (low <= number <= LIMIT):
        raise ValueError(f"{key} must be a number >= {low:g} and <= {LIMIT:g}, got {value!r}")
    return float(number)


def _grid(entry: Mapping[str, Any]) -> tuple[int, int] | None:
    """entry["grid"] as (X, Y) whole numbers >= 1; None when absent or null."""
    value = entry.get("grid")
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(
            type(side) is int and side >= 1 for side in value)):  # (true is no 1)
        raise ValueError(f"grid must be [X, Y], two whole numbers >= 1, got {value!r}")
    return tuple(value)


def _whole(entry: Mapping[str, Any], key: str) -> int:
    """entry[key] as a whole number >= 1."""
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number >= 1, got {value!r}")
    return value
