"""The executor: runs one rank's plan over a transport (the runtime beside the pure plans).

- `posting`: when receives are posted (shared with the simulator, which prices the same rule);
- `io`: when the input is read and the result written (IoSchedule, Placed);
- `codec`: what a wire codec provides, and the uncompressed one;
- `runner`: PlanRunner, which owns the reusable buffers, and run_plan.
"""
from .codec import IDENTITY, Codec, Identity
from .io import IoSchedule, Placed
from .posting import SCRATCH_SLOTS, Posting
from .runner import PlanRunner, buffer_sizes, run_plan

__all__ = ["Codec", "Identity", "IDENTITY", "IoSchedule", "Placed", "Posting", "SCRATCH_SLOTS",
           "PlanRunner", "buffer_sizes", "run_plan"]
