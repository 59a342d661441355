"""An interrupt injected at a chosen line, as a signal handler's exception lands between
two lines (`sys.settrace`).

Example::

    interrupted = interrupt_at_line(sync.detach, 3, gradsync.__file__)
"""
from __future__ import annotations

import sys


class Interrupt(Exception):
    """What a signal handler raises (KeyboardInterrupt would end pytest)."""


def interrupt_at_line(call, n: int, filename: str, *, code=None, from_line: int = 0) -> bool:
    """Run `call()` with the n-th line run in `filename` (of `code` only, from line
    `from_line` on, where given) raising Interrupt; whether it was interrupted."""
    seen = [0]

    def trace(frame, event, arg):
        if frame.f_code.co_filename != filename:
            return None
        if event == "line" and (code is None or frame.f_code is code) \
                and frame.f_lineno >= from_line:
            seen[0] += 1
            if seen[0] == n:
                raise Interrupt
        return trace

    sys.settrace(trace)
    try:
        call()
    except Interrupt:
        return True
    finally:
        sys.settrace(None)
    return False
