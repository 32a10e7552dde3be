"""
AMP arguments for values longer than the 65,535 bytes a value may have.

Pure Python on top of Twisted's own C{twisted.protocols.amp}: a peer running
stock Twisted alone (no C extension, no L{ampcore.install}, PyPy) can use it.
On CPython with ampcore's C extension, received values are checked and joined
in C; the results and the exceptions are the same either way.

- L{Chunked}C{(inner, maxLength=DEFAULT_MAX_LENGTH, optional=False)} wraps
  any argument that codes through C{toStringProto} / C{fromStringProto}
  (C{amp.String}, C{amp.Unicode}, C{amp.ListOf}, C{amp.AmpList}, your own).
- L{BigBytes}C{(...)} is C{Chunked(amp.String(), ...)},
  L{BigUnicode}C{(...)} is C{Chunked(amp.Unicode(), ...)}.

The layout, with no change to AMP's framing (the inner argument encodes the
value first; the cut is made in the encoded bytes):

- A value of at most 65,535 bytes is written exactly as the inner argument
  writes it: one key, C{name}.
- A longer one goes under C{name.0}, C{name.1}, ... C{name.N-1}, every chunk
  but the last exactly 65,535 bytes, with no C{name}: a peer whose schema
  still says C{String()} fails loudly on the missing key (C{KeyError}, as
  C{Argument.retrieve} raises) and never sees a truncated value.
- Received, the "BigString" layout (C{name}, C{name.2}, C{name.3}, ...) is
  accepted too.  Anything else is refused with L{MalformedChunks} (an
  C{amp.MalformedAmpBox}): chunks with gaps, C{name} with C{name.0} or
  C{name.1}, a lone C{name.0}, short or empty chunks where full ones belong,
  extra chunks, indexes that are not canonical decimal (C{name.01},
  C{name.+1}, C{name.1 }), and a total over C{maxLength}, which is checked
  before anything is joined.  Keys beginning with C{name.} are therefore
  reserved for the chunks of C{name}.

Errors, chosen to match what stock raises for the same mistakes:

- A required value that is absent (neither C{name} nor chunks):
  C{KeyError(name)}, as stock's C{Argument.retrieve}; an optional one
  gives None.
- Sending a value whose encoding is longer than C{maxLength}:
  C{amp.TooLong(isKey=False, isLocal=True, value, name)}, as stock's
  C{AmpBox.serialize} raises for a value over 65,535 bytes.
- Sending a value whose chunk keys would be over 255 bytes:
  C{amp.TooLong(isKey=True, isLocal=True, key, None)}, the first such key,
  as C{AmpBox.serialize} raises.  A name of up to 253 bytes always fits for
  values under 10 chunks; at the default C{maxLength} (257 chunks) names
  of up to 251 bytes do.
- Receiving a layout it refuses: L{MalformedChunks}.

Both of the sending errors are raised while the box is built (in C{toBox}),
so they fail the call locally, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.protocols import amp

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    #: C{_ampcore._joinChunks}: C{(box, name, maxLength, error)}, box a dict.
    _JoinChunksC = Callable[
        [dict[bytes, bytes], bytes, int, Callable[[bytes, str], BaseException]],
        bytes | None,
    ]

__all__ = [
    "BigBytes",
    "BigUnicode",
    "CHUNK_LENGTH",
    "Chunked",
    "DEFAULT_MAX_LENGTH",
    "MalformedChunks",
]

#: The length of every chunk but the last: AMP's largest value.
CHUNK_LENGTH = amp.MAX_VALUE_LENGTH  # 65,535

#: The default C{maxLength}: 16 MiB, 257 chunks.
DEFAULT_MAX_LENGTH = 16 * 1024 * 1024

_MAX_KEY_LENGTH = amp.MAX_KEY_LENGTH  # 255


class _StringCoder(Protocol):
    """What L{Chunked} wraps: an argument coding a value to bytes and back
    (an C{amp.Argument} instance, or any object with these two methods)."""

    def toStringProto(
        self, inObject: Any, proto: Any
    ) -> bytes | bytearray | memoryview: ...

    def fromStringProto(self, inString: bytes, proto: Any) -> Any: ...


class MalformedChunks(amp.MalformedAmpBox):
    """
    A received box holds chunks of a L{Chunked} value in a layout that is
    not accepted (or more than C{maxLength} bytes of them).

    @ivar keyName: the argument's wire name (C{bytes}).
    @ivar reason: what is wrong (C{str}).
    """

    def __init__(self, keyName: bytes, reason: str) -> None:
        amp.MalformedAmpBox.__init__(
            self, f"malformed chunked value {keyName!r}: {reason}"
        )
        self.keyName: bytes = keyName
        self.reason: str = reason


# ---- receiving: check the layout and join ----------------------------------


def _canonicalIndex(suffix: bytes) -> int | None:
    """The index a key suffix names, or None if it is not canonical decimal."""
    if not suffix.isdigit() or (suffix[0] == 0x30 and len(suffix) > 1):
        return None  # (bytes.isdigit is ASCII only; b"" is not digits)
    return int(suffix)


def _joinChunksPython(
    box: MutableMapping[bytes, bytes], name: bytes, maxLength: int
) -> bytes | None:
    """
    The value of C{name} in C{box}: None if there is neither C{name} nor a
    chunk of it; else the bytes, with its keys deleted from C{box}.  Raises
    L{MalformedChunks} for a layout it refuses, C{TypeError} for a value
    that is not bytes.  ampcore's C{_ampcore._joinChunks} does the same.
    """
    if not isinstance(name, bytes):
        raise TypeError("the argument name must be bytes")
    bare = box.get(name)
    if bare is not None:
        if not isinstance(bare, bytes):
            raise TypeError(f"the value of {name!r} is not bytes")
        if len(bare) > CHUNK_LENGTH:
            raise MalformedChunks(name, f"chunk {name!r} is longer than 65535 bytes")
    prefix = name + b"."
    start = len(prefix)
    keys: list[tuple[int, bytes, bytes]] = []
    n = total = 0
    low: int | None = None
    high: int | None = None
    highLength = 0  # set with high, on the first chunk
    has0 = has1 = False
    for key, value in box.items():
        if not isinstance(key, bytes) or not key.startswith(prefix):
            continue
        index = _canonicalIndex(key[start:])
        if index is None:
            raise MalformedChunks(
                name, f"chunk key {key!r}: the index is not canonical decimal"
            )
        if not isinstance(value, bytes):
            raise TypeError(f"the value of {key!r} is not bytes")
        length = len(value)
        if length > CHUNK_LENGTH:
            raise MalformedChunks(name, f"chunk {key!r} is longer than 65535 bytes")
        keys.append((index, key, value))
        n += 1
        total += length
        if low is None or index < low:
            low = index
        if high is None or index > high:
            high, highLength = index, length
        has0 = has0 or index == 0
        has1 = has1 or index == 1
    if n == 0:
        if bare is None:
            return None
        if len(bare) > maxLength:
            raise MalformedChunks(
                name, f"{len(bare)} bytes, over maxLength {maxLength}"
            )
        return box.pop(name)
    if bare is None:
        if low != 0 or high != n - 1:
            raise MalformedChunks(name, f"{n} chunks not numbered .0 to .{n - 1}")
        if n == 1:
            raise MalformedChunks(
                name,
                "a lone chunk .0 (a value of at most 65535 bytes goes "
                "under the bare key)",
            )
        first = 0
        pieces = n
    else:
        if has0:
            raise MalformedChunks(name, "both the bare key and chunk .0")
        if has1:
            raise MalformedChunks(
                name, "the bare key with chunk .1 (BigString chunks start at .2)"
            )
        if low != 2 or high != n + 1:
            raise MalformedChunks(
                name, f"{n} chunks after the bare key not numbered .2 to .{n + 1}"
            )
        total += len(bare)
        first = 1
        pieces = n + 1
    if total > maxLength:
        raise MalformedChunks(name, f"{total} bytes in chunks, over maxLength {maxLength}")
    # Every piece is at most CHUNK_LENGTH: the ones before the last are all
    # full exactly when they add up to (pieces - 1) full chunks.
    if total - highLength != (pieces - 1) * CHUNK_LENGTH:
        raise MalformedChunks(name, "a chunk before the last is not 65535 bytes")
    if highLength == 0:
        raise MalformedChunks(name, "the last chunk is empty")
    parts: list[bytes | None] = [None] * pieces
    if bare is not None:
        parts[0] = bare
    for index, key, value in keys:
        parts[index - first] = value
    # The checks above leave no slot None: n distinct indexes, low to
    # high = low + n - 1, fill every slot the bare key does not.
    joined = b"".join(cast("list[bytes]", parts))
    for index, key, value in keys:
        del box[key]
    if bare is not None:
        del box[name]
    return joined


def _loadJoinChunksC() -> _JoinChunksC | None:
    import ampcore

    if not ampcore.HAS_C_EXTENSION:
        return None
    join: _JoinChunksC | None = getattr(ampcore._c, "_joinChunks", None)
    return join


_joinChunksC = _loadJoinChunksC()

# The box types whose contents the C join reads directly (PyDict_Next): the
# ones whose item access is dict's own.  Any other mapping is read by the
# Python join, through its own methods.
_DIRECT_BOXES = (dict, amp.AmpBox)


def _joinChunks(
    box: MutableMapping[bytes, bytes], name: bytes, maxLength: int
) -> bytes | None:
    """L{_joinChunksPython}, in C when ampcore's C extension is in use."""
    if _joinChunksC is not None and type(box) in _DIRECT_BOXES:
        # (a dict or an AmpBox, a dict subclass, by the test just made)
        return _joinChunksC(
            cast("dict[bytes, bytes]", box), name, maxLength, MalformedChunks
        )
    return _joinChunksPython(box, name, maxLength)


# ---- sending: cut ------------------------------------------------------------


def _firstOverlongChunkKey(name: bytes, count: int) -> bytes | None:
    """The first of the keys C{name.0 .. name.<count-1>} over 255 bytes, or None."""
    digits = _MAX_KEY_LENGTH - len(name) - 1  # room left for the index
    if digits < 1:
        return name + b".0"
    if count - 1 >= 10**digits:
        return name + b".%d" % (10**digits,)
    return None


def _cut(
    name: bytes, value: bytes, strings: MutableMapping[bytes, ReadableBuffer]
) -> None:
    """Put C{value} (over 65,535 bytes) into C{strings} as name.0 .. name.N-1."""
    count = -(-len(value) // CHUNK_LENGTH)
    key = _firstOverlongChunkKey(name, count)
    if key is not None:
        raise amp.TooLong(True, True, key, None)
    # Slices of a memoryview of the one bytes object: no chunk is copied
    # here, each is copied once, by the serializer, into the box's bytes
    # (AmpBox.serialize and ampcore's take any bytes-like value).  Measured
    # on a 16 MiB value, this sends in about half the time bytes slices
    # take, which copy every chunk twice.
    prefix = name + b"."
    offset = 0
    view = memoryview(value)
    for index in range(count):
        strings[prefix + b"%d" % index] = view[offset : offset + CHUNK_LENGTH]
        offset += CHUNK_LENGTH


class Chunked(amp.Argument):
    """
    An argument whose encoded value may be longer than 65,535 bytes: over
    that, it goes in chunks under C{name.0} ... C{name.N-1} (see the
    module's documentation for the layout and the errors).

    @ivar inner: the argument that encodes the value (an instance, coding
        through C{toStringProto} and C{fromStringProto}).
    @ivar maxLength: the most bytes an encoded value may have, sent or
        received (default L{DEFAULT_MAX_LENGTH}, 16 MiB).
    """

    def __init__(
        self,
        inner: _StringCoder,
        maxLength: int = DEFAULT_MAX_LENGTH,
        optional: bool = False,
    ) -> None:
        amp.Argument.__init__(self, optional)
        if isinstance(inner, type):
            raise TypeError(f"Chunked wraps an argument instance, not the class {inner!r}")
        if isinstance(inner, Chunked):
            raise TypeError("Chunked cannot wrap another Chunked")
        for method in ("toStringProto", "fromStringProto"):
            if not callable(getattr(inner, method, None)):
                raise TypeError(f"Chunked needs an argument with {method}, not {inner!r}")
        if isinstance(maxLength, bool) or not isinstance(maxLength, int) or maxLength < 0:
            raise ValueError(f"maxLength must be an int >= 0, not {maxLength!r}")
        self.inner: _StringCoder = inner
        self.maxLength: int = maxLength

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.inner!r}, maxLength={self.maxLength}, "
            f"optional={self.optional})"
        )

    def toBox(
        self,
        name: bytes,
        strings: MutableMapping[bytes, ReadableBuffer],
        objects: MutableMapping[str, Any],
        proto: Any,
    ) -> None:
        # (a method of this class to mypy, so not covered by the
        # untyped_calls_exclude for Twisted in pyproject.toml)
        obj = self.retrieve(  # type: ignore[no-untyped-call]
            objects, amp._wireNameToPythonIdentifier(name), proto
        )
        if self.optional and obj is None:
            return
        value = self.inner.toStringProto(obj, proto)
        length = len(value)
        if length > self.maxLength:
            raise amp.TooLong(False, True, value, name)
        if length <= CHUNK_LENGTH:
            strings[name] = value  # exactly what the inner argument writes
            return
        if not isinstance(value, bytes):
            if not isinstance(value, (bytearray, memoryview)):
                raise TypeError(
                    f"{self.inner!r} encoded {name!r} as {type(value).__name__}, not bytes"
                )
            value = bytes(value)  # a snapshot: the chunks must not change
        _cut(name, value, strings)

    def fromBox(
        self,
        name: bytes,
        strings: MutableMapping[bytes, bytes],
        objects: MutableMapping[str, Any],
        proto: Any,
    ) -> None:
        value = _joinChunks(strings, name, self.maxLength)
        pythonName = amp._wireNameToPythonIdentifier(name)
        if value is None:
            if not self.optional:
                raise KeyError(name)  # what stock's Argument.retrieve raises
            objects[pythonName] = None
        else:
            objects[pythonName] = self.inner.fromStringProto(value, proto)


class BigBytes(Chunked):
    """C{Chunked(amp.String(), maxLength, optional)}: bytes of any length."""

    def __init__(
        self, maxLength: int = DEFAULT_MAX_LENGTH, optional: bool = False
    ) -> None:
        Chunked.__init__(self, amp.String(), maxLength, optional)


class BigUnicode(Chunked):
    """C{Chunked(amp.Unicode(), maxLength, optional)}: text, cut as UTF-8 bytes."""

    def __init__(
        self, maxLength: int = DEFAULT_MAX_LENGTH, optional: bool = False
    ) -> None:
        Chunked.__init__(self, amp.Unicode(), maxLength, optional)
