"""Cluster shapes the report predicts on: built-in ones, or those of a --cluster file.

Example::

    shapes = load_clusters(json.loads(Path("my-clusters.json").read_text()))
    shapes[0].cluster.size        # ranks
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Scale", "default_clusters", "load_clusters"]


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
    from collectives.costmodel import ClusterModel, LinkModel

    shapes = []
    for entry in document.get("clusters", ()):
        try:
            links = {key: LinkModel.from_bandwidth(alpha_us=float(entry[key]["alpha_us"]),
                                                   gbytes_per_s=float(entry[key]["gbytes_per_s"]),
                                                   zero_copy=bool(entry[key].get("zero_copy", False)))
                     for key in ("intra", "inter")}
            grid = tuple(entry["grid"]) if entry.get("grid") else None
            cluster = ClusterModel.uniform(
                nodes=int(entry["nodes"]), ranks_per_node=int(entry["ranks_per_node"]), grid=grid,
                gamma=1 / (float(entry["reduce_gbytes_per_s"]) * 1e9), name=str(entry["name"]),
                torus_links=bool(entry.get("torus_links", False)), **links)
        except KeyError as missing:
            raise ValueError(f"cluster {entry.get('name', entry)!r} lacks {missing}; needs name, "
                             "nodes, ranks_per_node, intra/inter {alpha_us, gbytes_per_s}, "
                             "reduce_gbytes_per_s (grid, torus_links optional)") from None
        shapes.append(Scale(cluster.name, cluster))
    if not shapes:
        raise ValueError("the cluster file lists no clusters: {\"clusters\": [{...}, ...]}")
    return shapes

