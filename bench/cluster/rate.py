"""Link rates as tc writes them: ``1gbit``, ``500mbit``, ``100kbit``; or unshaped.

Example::

    rate = LinkRate.parse("1gbit")
    rate.bytes_per_second      # 125000000.0
    LinkRate.parse("none")     # None: links are not shaped
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LinkRate", "TCP_GOODPUT", "UNSHAPED"]

UNSHAPED = ("none", "unshaped")
_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_FORM = re.compile(r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)", re.IGNORECASE)
# Bytes a host can send per byte on the wire through a tbf that counts Ethernet frames:
# TCP payload 1448 (MTU 1500 less IP, TCP and timestamp headers) per 1514-byte frame.
TCP_GOODPUT = 1448 / 1514
_MAX_BITS_PER_SECOND = 8e12  # tbf's bucket (4 ms at the rate) must stay under 4 GiB


@dataclass(frozen=True)
class LinkRate:
    """A link's capacity each way, in bits per second (tc's units: decimal, kbit = 1000 bit)."""

    bits_per_second: float

    @classmethod
    def parse(cls, text: str) -> "LinkRate | None":
        """``1gbit`` as LinkRate(1e9); ``none``/``unshaped`` as None; ValueError otherwise."""
        if text.strip().lower() in UNSHAPED:
            return None
        match = _FORM.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"link rate {text!r} is not a rate such as 1gbit, 500mbit or "
                             f"100kbit (tc's units: {', '.join(_UNITS)}), nor 'none'")
        rate = cls(float(match.group(1)) * _UNITS[match.group(2).lower()])
        if rate.bits_per_second < 8000:
            raise ValueError(f"link rate {text!r} is below 8kbit, too slow for the lab's "
                             "control traffic")
        if rate.bits_per_second > _MAX_BITS_PER_SECOND:  # (and inf, from 309 digits)
            raise ValueError(f"link rate {text!r} is too high for tc's tbf, whose bucket (4 "
                             "ms at the rate) must stay under 4 GiB; give at most 8tbit, or "
                             "'none' (unshaped)")
        return rate

    @property
    def bytes_per_second(self) -> float:
        return self.bits_per_second / 8

    @property
    def tc(self) -> str:
        """The rate as tc takes it (``1000000000bit``)."""
        return f"{int(self.bits_per_second)}bit"

    @property
    def burst_bytes(self) -> int:
        """tbf's bucket: 4 ms at the rate, and no less than two 64 KiB GSO packets."""
        return max(128 << 10, int(self.bytes_per_second * 0.004))

    def __str__(self) -> str:
        for unit in ("tbit", "gbit", "mbit", "kbit"):
            if self.bits_per_second >= _UNITS[unit] and self.bits_per_second % _UNITS[unit] == 0:
                return f"{int(self.bits_per_second // _UNITS[unit])}{unit}"
        return self.tc
