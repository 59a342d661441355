"""Settings from arguments and `COLLECTIVES_*` environment variables; arguments win."""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Settings"]

DEFAULT_TIMEOUT = 300.0
DEFAULT_FUSION_BYTES = 64 << 20


def _env(name: str, convert, default):
    raw = os.environ.get(f"COLLECTIVES_{name}")
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f"COLLECTIVES_{name}={raw!r} is not a valid {convert.__name__}") from None


def _grid(raw: str) -> tuple[int, int]:
    """'XxY' (or 'X,Y') as (X, Y)."""
    parts = raw.lower().replace(",", "x").split("x")
    if len(parts) != 2:
        raise ValueError(raw)
    return int(parts[0]), int(parts[1])


_grid.__name__ = "grid such as 4x2"


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("0", "false", "no", "off")


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

    @classmethod
    def resolve(cls, *, timeout: float | None = None, local_size: int | None = None,
                grid: tuple[int, int] | None = None,
                check: bool | None = None) -> "Settings":
        settings = cls(
            algorithm=_env("ALGORITHM", str, cls.algorithm),
            timeout=timeout if timeout is not None else _env("TIMEOUT", float, cls.timeout),
            fusion_bytes=_env("FUSION_BYTES", int, cls.fusion_bytes),
            local_size=local_size if local_size is not None else _env("LOCAL_SIZE", int, None),
            grid=tuple(grid) if grid is not None else _env("GRID", _grid, None),
            debug=_env("DEBUG", _flag, False),
            check=check if check is not None else _env("CHECK", _flag, True),
            shm=_env("SHM", _flag, False),
        )
        if settings.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {settings.timeout}")
        if settings.fusion_bytes <= 0:
            raise ValueError(f"fusion_bytes must be > 0, got {settings.fusion_bytes}")
        return settings
