"""Build the C extension; metadata lives in pyproject.toml."""

import glob
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def warning_flags(compiler_type):
    """The warning flags for a distutils compiler type, as that compiler
    spells them: MSVC's cl takes /W and /WX, not GCC's -W flags (which
    clang and mingw understand)."""
    werror = bool(os.environ.get("AMPCORE_WERROR"))
    if compiler_type == "msvc":
        return ["/W3"] + (["/WX"] if werror else [])
    return ["-Wall", "-Wextra"] + (["-Werror"] if werror else [])


def debug_flags(compiler_type):
    """AMPCORE_DEBUG=1: no optimization, debug info, assert() kept."""
    if not os.environ.get("AMPCORE_DEBUG"):
        return []
    if compiler_type == "msvc":
        return ["/Od", "/Zi", "/UNDEBUG"]
    return ["-O0", "-g", "-UNDEBUG"]


class BuildExt(build_ext):
    """Adds the flags once the compiler, and so its dialect, is known."""

    def build_extensions(self):
        kind = self.compiler.compiler_type
        for ext in self.extensions:
            ext.extra_compile_args = (
                warning_flags(kind) + debug_flags(kind) + list(ext.extra_compile_args or [])
            )
        super().build_extensions()


ext_modules = []
if platform.python_implementation() == "CPython":
    ext_modules.append(
        Extension(
            "ampcore._ampcore",
            sources=["ampcore/_ampcore.c", "ampcore/codec.c"],
            depends=sorted(glob.glob("ampcore/*.h")),
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
