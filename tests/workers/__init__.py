"""Programs that multi-rank tests launch under a real mpiexec (see tests/mpirun.py)."""
