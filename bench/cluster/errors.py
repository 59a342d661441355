"""The one exception of the lab: what is wrong, and what to do about it."""
from __future__ import annotations

__all__ = ["LabError"]


class LabError(RuntimeError):
    """The lab cannot be made, used or removed; the message says why and what to do.

    Example::

        raise LabError("the lab needs root: run it as root (sudo ...)")
    """
