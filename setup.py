"""Build the C extension; metadata lives in pyproject.toml."""

import glob
import os
import platform

from setuptools import Extension, setup

extra_compile_args = ["-Wall", "-Wextra"]
if os.environ.get("AMPCORE_WERROR"):
    extra_compile_args.append("-Werror")
if os.environ.get("AMPCORE_DEBUG"):
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]

ext_modules = []
if platform.python_implementation() == "CPython":
    ext_modules.append(
        Extension(
            "ampcore._ampcore",
            sources=["ampcore/_ampcore.c", "ampcore/codec.c"],
            depends=sorted(glob.glob("ampcore/*.h")),
            extra_compile_args=extra_compile_args,
        )
    )

setup(ext_modules=ext_modules)
