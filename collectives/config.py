"""Settings from arguments and `COLLECTIVES_*` environment variables; arguments win.

Every value is checked when it is read, with the variable's name in the error: a bad value
is refused at `init()` (on every rank: bootstrap shares the error) rather than misbehaving
later. The settings that change what the ranks exchange (`agreed`) must be equal on every
rank; init compares them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Settings", "DEFAULT_TIMEOUT", "DEFAULT_FUSION_BYTES", "DEFAULT_ABORT_GRACE"]

DEFAULT_TIMEOUT = 300.0
DEFAULT_FUSION_BYTES = 64 << 20
DEFAULT_ABORT_GRACE = 5.0  # seconds; MPI_Abort that reaches the launcher ends the job in ~2 s


def _env(name: str, convert, default):
    raw = os.environ.get(f"COLLECTIVES_{name}")
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f"COLLECTIVES_{name}={raw!r} is not a valid {convert.__name__}") from None


MAX_COUNT = (1 << 63) - 1  # counts and sizes travel between ranks as int64
MAX_SECONDS = 1e7  # about 116 days; threads and interval timers refuse much longer waits


def _seconds(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise ValueError(raw)
    return value


_seconds.__name__ = f"number of seconds (> 0, at most {MAX_SECONDS:g})"


def _positive(raw: str) -> int:
    value = int(raw)
    if not 0 < value <= MAX_COUNT:
        raise ValueError(raw)
    return value


_positive.__name__ = "positive integer (at most 2**63 - 1)"


def _grid(raw: str) -> tuple[int, int]:
    """'XxY' (or 'X,Y') as (X, Y)."""
    parts = raw.lower().replace(",", "x").split("x")
    if len(parts) != 2 or min(int(p) for p in parts) < 1:
        raise ValueError(raw)
    return int(parts[0]), int(parts[1])


_grid.__name__ = "grid such as 4x2"


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(raw)


_flag.__name__ = "flag (1/0, true/false, yes/no, on/off)"


def _argument(name: str, value, check) -> object:
    """An argument checked like its environment variable, named as the argument."""
    try:
        return check(str(value))
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a valid {check.__name__}") from None


@dataclass(frozen=True)
class Settings:
    """A communicator's options, resolved once at init."""

    algorithm: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    fusion_bytes: int = DEFAULT_FUSION_BYTES
    local_size: int | None = None
    grid: tuple[int, int] | None = None  # torus2d grid (X, Y); COLLECTIVES_GRID=XxY
    debug: bool = False
    check: bool = True  # the agreement check before every collective (COLLECTIVES_CHECK=0: off)
    shm: bool = False  # on-node peers exchange through shared windows (COLLECTIVES_SHM=1: on)
    abort_grace: float = DEFAULT_ABORT_GRACE  # seconds MPI_Abort gets before the watchdog
    deterministic: bool = False  # reductions' default (COLLECTIVES_DETERMINISTIC=1: on)
    cuda_aware_mpi: bool | None = None  # COLLECTIVES_CUDA_AWARE_MPI; None: MPI's own word

    @classmethod
    def resolve(cls, *, timeout: float | None = None, local_size: int | None = None,
                grid: tuple[int, int] | None = None,
                check: bool | None = None) -> "Settings":
        from .options import check_algorithm

        algorithm = _env("ALGORITHM", str, cls.algorithm)
        try:
            check_algorithm(algorithm)
        except ValueError as error:
            raise ValueError(f"COLLECTIVES_ALGORITHM: {error}") from None
        if check is not None and not isinstance(check, (bool, np.bool_)):
            raise TypeError(f"check must be True, False or None (COLLECTIVES_CHECK), got "
                            f"{check!r}")  # ("no" is truthy: the check stayed on)
        if grid is not None:
            grid = _argument("grid", "x".join(map(str, grid)) if isinstance(grid, (tuple, list))
                             else grid, _grid)
        return cls(
            algorithm=algorithm,
            timeout=(_env("TIMEOUT", _seconds, cls.timeout) if timeout is None
                     else _argument("timeout", timeout, _seconds)),
            fusion_bytes=_env("FUSION_BYTES", _positive, cls.fusion_bytes),
            local_size=(_env("LOCAL_SIZE", _positive, None) if local_size is None
                        else _argument("local_size", local_size, _positive)),
            grid=grid if grid is not None else _env("GRID", _grid, None),
            debug=_env("DEBUG", _flag, False),
            check=bool(check) if check is not None else _env("CHECK", _flag, True),
            shm=_env("SHM", _flag, False),
            abort_grace=_env("ABORT_GRACE", _seconds, DEFAULT_ABORT_GRACE),
            deterministic=_env("DETERMINISTIC", _flag, False),
            cuda_aware_mpi=_env("CUDA_AWARE_MPI", _flag, None),
        )

    def agreed(self) -> dict[str, object]:
        """The settings every rank must share: they decide what the ranks exchange."""
        return {"check": self.check, "shm": self.shm, "local_size": self.local_size,
                "grid": self.grid, "cuda_aware_mpi": self.cuda_aware_mpi}
