"""fp16 / bf16 wire compression: the codec, overflow-safe scaling, error feedback.

- `codec`: HalfCodec, the 16-bit wire the executor runs plans with;
- `scaling`: the agreed power-of-two scale that keeps every partial sum in 16-bit range;
- `feedback`: bounded error-feedback residuals;
- `bucket`: a compressed all-reduce of one fusion bucket, step by step.

docs/compression.md walks through a compressed all-reduce.
"""
from .codec import HalfCodec, auto_may_compress, codec_for, work_dtype
from .feedback import ErrorFeedback
from .scaling import absmax, absmaxes, scale_for, scales_for, unscale_into

__all__ = ["HalfCodec", "auto_may_compress", "codec_for", "work_dtype", "ErrorFeedback",
           "absmax", "absmaxes", "scale_for", "scales_for", "unscale_into"]
