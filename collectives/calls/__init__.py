"""One module per collective: how a call is checked, signed, agreed on and run.

Each module turns a method's arguments into a `Call` (calls.base); the Communicator issues
calls in order (sync or async), runs the agreement check and then the data movement, and
handles failures the same way for every collective.
"""
from .base import Call, Context, Refused

__all__ = ["Call", "Context", "Refused"]
