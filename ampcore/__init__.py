"""
ampcore: a C core for Twisted's AMP (twisted.protocols.amp).

The wire codec:

- L{serialize}C{(box) -> bytes}: what C{AmpBox.serialize} gives.
- L{parse}C{(data) -> list}: what C{twisted.protocols.amp.parseString} gives.
- L{BoxParser}: an incremental parser; C{feed(data)} returns complete boxes.

With C{AMPCORE_PUREPYTHON=1} in the environment, on an interpreter other
than CPython, or when the C extension cannot be imported, the same names are
backed by stock Twisted; L{HAS_C_EXTENSION} says which is in use.
"""

import os
import platform

from ampcore._errors import KeyTooLongError

__all__ = [
    "HAS_C_EXTENSION",
    "BoxParser",
    "KeyTooLongError",
    "parse",
    "serialize",
]

__version__ = "0.1.0"


def _load_c_extension():
    if os.environ.get("AMPCORE_PUREPYTHON", "") not in ("", "0"):
        return None
    if platform.python_implementation() != "CPython":
        return None
    try:
        from ampcore import _ampcore
    except ImportError:
        return None
    return _ampcore


_c = _load_c_extension()
HAS_C_EXTENSION = _c is not None

if _c is not None:
    serialize = _c.serialize
    parse = _c.parse
    BoxParser = _c.BoxParser
else:
    from ampcore._fallback import BoxParser, parse, serialize
