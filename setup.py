"""Builds the optional compiled codec, `kernels._codec`: the fp16/bf16 CPU kernels.

Everything else is declared in pyproject.toml. The extension is optional: where no C++17
compiler works the install goes on without it, and `kernels` runs its NumPy twin instead
(`kernels.cpu_backend()` says which is active).
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

setup(ext_modules=[CODEC])
