"""
python -m ampcore: say which ampcore is in use here, for a person or a
deployment's health check.

    python -m ampcore              # versions, C extension or fallback, install()
    python -m ampcore --require-c  # the same; exit status 1 on the fallback
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

import twisted

import ampcore


def report() -> list[str]:
    """The lines C{python -m ampcore} prints."""
    lines = [
        f"ampcore {ampcore.__version__} ({ampcore.__file__})",
        f"Twisted {twisted.__version__}",
        f"Python {platform.python_implementation()} {platform.python_version()}",
    ]
    if ampcore.HAS_C_EXTENSION:
        lines.append("C extension: in use")
    else:
        lines.append(f"C extension: not in use ({ampcore.FALLBACK_REASON})")
    state = "in effect" if ampcore.installed() else "not in effect"
    lines.append(f"ampcore.install(): {state}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ampcore",
        description="Report the ampcore in use: its version, Twisted's, the "
        "Python, and whether ampcore's C extension is in use.",
    )
    parser.add_argument(
        "--require-c",
        action="store_true",
        help="exit with status 1 unless the C extension is in use "
        "(for a deployment's health check)",
    )
    options = parser.parse_args(argv)
    print("\n".join(report()))
    if options.require_c and not ampcore.HAS_C_EXTENSION:
        print(
            f"ampcore: the C extension is required but not in use: {ampcore.FALLBACK_REASON}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
