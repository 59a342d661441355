"""Builds the optional compiled parts of `kernels`: the codec (`kernels._codec`, the fp16/bf16
CPU kernels), `kernels._extents` (where many arrays lie in memory, for the checks of outs)
and `kernels._gather` (many arrays copied into and out of one flat buffer, for fusion).

Everything else is declared in pyproject.toml. All three are optional: where no compiler works the
install goes on without them, and `kernels` runs its NumPy twin instead
(`kernels.cpu_backend()` says which codec is active).
"""

from setuptools import Extension, setup

CODEC = Extension(
    "kernels._codec",
    sources=["kernels/codec/module.cpp"],
    depends=["kernels/codec/simd.h"],
    language="c++",
    # Vector extensions and target attributes are GCC/Clang's; the instruction sets are
    # chosen at run time, so the build itself needs no -m flags.
    extra_compile_args=[
        "-std=c++17", "-O2", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti",
        "-fvisibility=hidden", "-Wno-psabi",
    ],
    optional=True,
)

EXTENTS = Extension(
    "kernels._extents",
    sources=["kernels/extents/module.c"],
    extra_compile_args=["-O2", "-fvisibility=hidden"],
    optional=True,
)

GATHER = Extension(
    "kernels._gather",
    sources=["kernels/gather/module.c"],
    extra_compile_args=["-O2", "-fvisibility=hidden"],
    optional=True,
)

setup(ext_modules=[CODEC, EXTENTS, GATHER])
