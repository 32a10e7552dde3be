"""
ampcore: a C core for Twisted's AMP (twisted.protocols.amp).

The wire codec:

- L{serialize}C{(box) -> bytes}: what C{AmpBox.serialize} gives.
- L{parse}C{(data) -> list}: what C{twisted.protocols.amp.parseString} gives.
- L{BoxParser}: an incremental parser; C{feed(data)} returns complete boxes.

The drop-in protocol classes, with their hot paths in C:

- L{BoxDispatcher}, L{BinaryBoxProtocol}, L{AMP}: subclasses of Twisted's
  classes of the same names, used the same way.
- L{install}() puts them into C{twisted.protocols.amp} (call it before
  anything subclasses C{amp.AMP}); L{uninstall}() puts Twisted's back.

With C{AMPCORE_PUREPYTHON=1} in the environment, on an interpreter other
than CPython, or when the C extension cannot be imported, the same names are
backed by stock Twisted; L{HAS_C_EXTENSION} says which is in use and
L{FALLBACK_REASON} why the C extension is not.
"""

from __future__ import annotations

import os
import platform
from types import ModuleType

from ampcore._errors import (
    BOX_STRING_COST,
    DEFAULT_MAX_BOX_SIZE,
    BoxTooLong,
    KeyTooLongError,
)
from ampcore._version import __version__ as __version__

__all__ = [
    "AMP",
    "BinaryBoxProtocol",
    "BoxDispatcher",
    "FALLBACK_REASON",
    "HAS_C_EXTENSION",
    "BoxParser",
    "KeyTooLongError",
    "BoxTooLong",
    "BOX_STRING_COST",
    "DEFAULT_MAX_BOX_SIZE",
    "parse",
    "install",
    "installed",
    "serialize",
    "uninstall",
]


def _load_c_extension() -> tuple[ModuleType | None, str | None]:
    """The C extension module, or None and why not."""
    if os.environ.get("AMPCORE_PUREPYTHON", "") not in ("", "0"):
        return None, "AMPCORE_PUREPYTHON is set"
    if platform.python_implementation() != "CPython":
        return None, f"{platform.python_implementation()} is not CPython"
    try:
        from ampcore import _ampcore
    except ImportError as e:
        # Not built (for one, ampcore imported from its source tree).
        return None, f"the C extension did not import: {e}"
    return _ampcore, None


_c, FALLBACK_REASON = _load_c_extension()
HAS_C_EXTENSION: bool = _c is not None

# Type checkers see the C extension's names (ampcore/_ampcore.pyi); the
# fallback's have the same interface.
if _c is not None:
    from ampcore._ampcore import BoxParser, parse, serialize
    from ampcore._protocol import AMP, BinaryBoxProtocol, BoxDispatcher
else:
    from twisted.protocols.amp import (  # type: ignore[assignment]
        AMP,
        BinaryBoxProtocol,
        BoxDispatcher,
    )

    from ampcore._fallback import BoxParser, parse, serialize  # type: ignore[assignment]

_PATCHED: tuple[str, ...] = ("BoxDispatcher", "BinaryBoxProtocol", "AMP")


def install() -> bool:
    """
    Make C{twisted.protocols.amp} use ampcore's classes.

    Call it once, before anything subclasses C{amp.AMP}: classes created
    earlier keep Twisted's classes as their bases.  Without
    the C extension this does nothing.  Returns L{HAS_C_EXTENSION}.
    """
    if HAS_C_EXTENSION:
        from twisted.protocols import amp

        for name in _PATCHED:
            setattr(amp, name, globals()[name])
    return HAS_C_EXTENSION


def uninstall() -> None:
    """Put Twisted's own classes back into C{twisted.protocols.amp}."""
    if HAS_C_EXTENSION:
        from twisted.protocols import amp

        for name in _PATCHED:
            setattr(amp, name, globals()[name]._ampcoreStock)


def installed() -> bool:
    """Whether C{twisted.protocols.amp.AMP} is ampcore's."""
    from twisted.protocols import amp

    return HAS_C_EXTENSION and amp.AMP is AMP
