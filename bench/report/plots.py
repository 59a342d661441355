"""The report's PNGs: measured busbw, the winner per size, model vs measurement, at scale.

matplotlib on the file-only Agg backend (the ranks have no display); each PNG is written
atomically (``collectives.files.write_atomically``), as report.md and results.json are.

Example::

    plot_busbw(rows, Path("busbw.png"), np_=2)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.report.model import Point
from bench.sizes import format_size
from collectives.files import write_atomically

__all__ = ["plot_accuracy", "plot_busbw", "plot_scale", "plot_winners"]

_STYLE = {"mpi": "tab:brown", "native": "k", "ring": "tab:blue", "hierarchical": "tab:orange",
          "torus2d": "tab:green", "halving_doubling": "tab:red", "auto": "tab:purple",
          "direct": "tab:pink"}


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the ranks have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    """`fig` as a PNG at `path`, written atomically, then closed."""
    try:
        write_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)


def _color(label: str) -> str:
    return _STYLE.get(label.split("+")[0], "tab:gray")


def _size_axis(ax, sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = [s for i, s in enumerate(sizes) if i % max(1, len(sizes) // 8) == 0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_size(s).replace(" ", "") for s in ticks], rotation=30)
    ax.grid(True, which="major", alpha=0.3)


def plot_busbw(rows, path: Path, *, np_: int) -> None:
    """Measured busbw per variant and size (log-log; dashed: fp16 on the wire)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label in dict.fromkeys(row.label for row in rows):
        mine = [row for row in rows if row.label == label]
        ax.plot([r.size for r in mine], [r.busbw for r in mine], marker="o", ms=3,
                color=_color(label), ls="--" if "+" in label else "-", label=label)
    _size_axis(ax, sorted({row.size for row in rows}))
    ax.set_yscale("log")
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s, log)")
    ax.set_title(f"Measured bus bandwidth, np={np_} (dashed: fp16 on the wire)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(plt, fig, path)


def plot_winners(winners: Sequence[tuple[int, str, str | None]], path: Path, *, np_: int) -> None:
    """Per size: the measured winner (top strip) and what auto ran (bottom strip)."""
    from matplotlib.patches import Patch

    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(9, 2.8))
    labels = sorted({w for _, m, p in winners for w in (m, p) if w})
    for i, (size, measured, predicted) in enumerate(winners):
        for y, label in ((1, measured), (0, predicted)):
            if label:
                ax.add_patch(plt.Rectangle((i, y + 0.1), 1, 0.8, color=_color(label),
                                           hatch="//" if "+" in label else None, alpha=0.85))
    ax.set_xlim(0, len(winners))
    ax.set_ylim(0, 2)
    ax.set_yticks([0.5, 1.5])
    ax.set_yticklabels(["auto ran", "measured best"])
    ax.set_xticks([i + 0.5 for i in range(len(winners))])
    ax.set_xticklabels([format_size(s).replace(" ", "") for s, _, _ in winners],
                       rotation=45, fontsize=7)
    ax.legend(handles=[Patch(color=_color(l), label=l, hatch="//" if "+" in l else None)
                       for l in labels], fontsize=7, ncol=min(len(labels), 6),
              loc="upper center", bbox_to_anchor=(0.5, 1.45))
    ax.set_title(f"Fastest algorithm per size, np={np_}", pad=38)
    fig.tight_layout()
    _save(plt, fig, path)


def plot_accuracy(points: Mapping[str, list[Point]], path: Path, *, np_: int) -> None:
    """Measured (dots) vs predicted (lines) time per algorithm, and the relative error beside
    how far the same calls timed twice differed (grey)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    spread: dict[int, float] = {}
    for label, series in points.items():
        xs = [point.size for point in series]
        top.plot(xs, [point.measured * 1e6 for point in series], "o", color=_color(label), ms=4)
        top.plot(xs, [point.predicted * 1e6 for point in series], "-", color=_color(label), label=label)
        bottom.plot(xs, [100 * point.error for point in series], "o-", color=_color(label), ms=3)
        for point in series:
            spread[point.size] = max(spread.get(point.size, 0.0), 100 * abs(point.repeat_difference))
    top.set_yscale("log")
    top.set_ylabel("time per call (us)")
    top.set_title(f"Measured (dots) vs predicted (lines), np={np_}")
    top.legend(fontsize=8)
    sizes = sorted(spread)
    bottom.axhspan(-25, 25, color="tab:green", alpha=0.12)
    bottom.fill_between(sizes, [-spread[s] for s in sizes], [spread[s] for s in sizes],
                        color="0.5", alpha=0.3, label="same call timed twice: difference")
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_ylabel("error (%)")
    bottom.legend(fontsize=8, loc="lower right")
    for ax in (top, bottom):
        _size_axis(ax, sizes)
    bottom.set_xlabel("message size")
    fig.tight_layout()
    _save(plt, fig, path)


def plot_scale(results: Sequence[dict], path: Path) -> None:
    """Predicted busbw per size, one panel per cluster shape, crossovers dotted."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.6), squeeze=False)
    for ax, result in zip(axes[0], results):
        sizes = result["sizes"]
        for i, (name, by_size) in enumerate(result["algorithms"].items()):
            # Earlier lines wider, so equal predictions (hierarchical, torus2d) both show.
            ax.plot(sizes, [by_size[s]["busbw"] for s in sizes], marker="o", ms=3,
                    color=_color(name), label=name, lw=4.5 - i, alpha=0.85)
        for change in result["crossovers"]:
            lo, hi = change["between"]
            ax.axvline((lo * hi) ** 0.5, color="gray", ls=":", lw=1)
        _size_axis(ax, sizes)
        # the user's name as text: "$...$" was parsed as mathtext, and raised once measured
        ax.set_title(result["name"], fontsize=9, parse_math=False)
        ax.set_xlabel("message size")
        ax.set_ylabel("predicted busbw (GB/s)")
        ax.legend(fontsize=7)
    fig.suptitle("At scale (simulated; dotted lines: ranking changes)", fontsize=10)
    fig.tight_layout()
    _save(plt, fig, path)
