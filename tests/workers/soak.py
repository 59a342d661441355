"""The soak (bench/soak.py) as a test worker: same arguments, same exit status.

Usage: mpiexec -n P python -m tests.workers.soak [bench.soak options]
"""
import sys

from bench.soak import main

if __name__ == "__main__":
    sys.exit(main())
