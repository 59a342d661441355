"""results.json: the sweep's rows with their predictions, winners, accuracy points, at scale.

docs/report.md describes the fields.

Example::

    write_results(out_dir / "results.json", command=..., env=env, ...)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import environment, harness
from bench.ops.baseline import MPI_BASELINE
from bench.report.model import Point, guesses

__all__ = ["write_results"]


def write_results(path: Path, *, command: str, env: Mapping[str, Any], config: Mapping[str, Any],
                  calibration: Any, source: str, accuracy_calibration: Any,
                  rows: Sequence[harness.Row], winners: Sequence[tuple[int, str, str]],
                  points: Mapping[str, list[Point]], file_points: Mapping[str, list[Point]] | None,
                  scale: Sequence[dict]) -> None:
    """Write the report's JSON document."""
    from_file = guesses(file_points)
    environment.write_json(str(path), {
        "command": command, "environment": env, "config": dict(config),
        "baseline": MPI_BASELINE,
        "calibration": {"source": source, **calibration.as_json()},
        **({} if file_points is None else {"accuracy_calibration": accuracy_calibration.as_json()}),
        "rows": [{**row.as_json(), "error": _error(row)} for row in rows],
        "winners": [{"size": s, "measured": m, "auto_pick": p} for s, m, p in winners],
        "accuracy": [{"algorithm": name, "size": point.size, "time_us": point.measured * 1e6,
                      "predicted_time_us": point.predicted * 1e6, "error": point.error,
                      "again_time_us": point.again * 1e6,
                      "repeat_difference": point.repeat_difference,
                      **_tuning_file_prediction(from_file.get((name, point.size)), point.measured)}
                     for name, series in points.items() for point in series],
        "at_scale": list(scale),
    })


def _error(row: harness.Row) -> float | None:
    """(predicted - measured) / measured, None without a prediction."""
    return None if not row.predicted_us else (row.predicted_us - row.time_us) / row.time_us


def _tuning_file_prediction(guess: float | None, seconds: float) -> dict:
    """The tuning file's prediction of one accuracy point, as results.json fields."""
    return {} if guess is None else {"tuning_file_predicted_time_us": guess * 1e6,
                                     "tuning_file_error": (guess - seconds) / seconds}
