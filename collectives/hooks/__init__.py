"""Framework glue, imported on demand so that `import collectives` never loads a framework.

- `collectives.hooks.torch_backend`: the torch.distributed backend "collectives" (DDP, FSDP2,
  ZeroRedundancyOptimizer, torch.distributed's functions); importing it registers it.
- `collectives.hooks.torch`: the DDP comm hook, DistributedOptimizer, init_process_group.
- `collectives.hooks.jax`: data-parallel gradient averaging of JAX pytrees.

Example::

    import collectives.hooks.torch_backend  # noqa: F401
    torch.distributed.init_process_group(backend="collectives")
"""
