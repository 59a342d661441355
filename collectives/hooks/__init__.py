"""Framework glue: `collectives.hooks.torch` (DDP comm hook, DistributedOptimizer).

Imported on demand, so `import collectives` never loads a framework::

    from collectives.hooks.torch import HookState, allreduce_hook
"""
