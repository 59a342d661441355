# Two entry points, each creating .venv and installing what it needs:
#   make bench   all-reduce bandwidth of our algorithms beside MPI's own, on 2 local ranks
#   make test    the full test suite (multi-rank tests run under the venv's mpiexec)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NP     ?= 2
BENCH_ARGS ?= -b 8 -e 64M -f 2 -n 10 -w 3 --algorithms all

.PHONY: bench test bench-kernels clean

$(VENV)/.installed: pyproject.toml setup.py kernels/codec/module.cpp kernels/codec/simd.h \
                    kernels/extents/module.c kernels/gather/module.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; a bare `torch` would pull CUDA wheels
	$(PY) -m pip install -q -e ".[mpi,test,report,torch,jax]"
	touch $@

bench: $(VENV)/.installed
	$(VENV)/bin/collectives-bench --np $(NP) $(BENCH_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest

bench-kernels: $(VENV)/.installed
	$(PY) -m pytest bench/ --benchmark-only

clean:
	rm -rf $(VENV) *.egg-info
