"""Exceptions ampcore adds on top of Twisted's own."""

from __future__ import annotations

from typing import cast

from twisted.protocols import amp


class KeyTooLongError(amp.TooLong, AttributeError):
    """
    A peer sent a key length prefix above 255 (C{amp.MAX_KEY_LENGTH}).

    Raised by L{ampcore.parse}.  Stock L{twisted.protocols.amp.parseString}
    fails on the same input with an C{AttributeError} (its helper has no
    C{loseConnection}); this class is an C{AttributeError} too, so code
    written against stock keeps catching it, and it is a remote, key-position
    L{amp.TooLong} like the one L{amp.BinaryBoxProtocol} reports.

    @ivar length: the length prefix that was received.
    @ivar offset: where that prefix starts in the parsed bytes.
    """

    def __init__(self, length: int, offset: int) -> None:
        amp.TooLong.__init__(self, True, False, None, None)
        self.length: int = length
        self.offset: int = offset
        self.args = (
            f"remote key too long: length prefix {length} at offset {offset} "
            f"exceeds {amp.MAX_KEY_LENGTH}",
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"KeyTooLongError(length={self.length}, offset={self.offset})"


#: The default cap on one box: L{ampcore.BinaryBoxProtocol.maxBoxSize},
#: L{ampcore.BoxParser}'s and L{ampcore.parse}'s C{maxBoxSize}.
DEFAULT_MAX_BOX_SIZE: int = 64 * 1024 * 1024

#: What each key and value of a box costs beyond its bytes, in C{maxBoxSize}
#: units: its length prefix and about what a bytes object and its dict slot
#: take, so that the cap bounds memory, not only bytes on the wire.
BOX_STRING_COST: int = 64


class BoxTooLong(amp.TooLong):
    """
    A box being received grew past C{maxBoxSize}.

    Stock Twisted puts no bound on one box; ampcore does, beyond stock (see
    README).  Every key and value counts its length plus L{BOX_STRING_COST}
    (an estimate of the memory it takes once parsed), counted before it is
    allocated.  A protocol drops the connection, as it does for an over-long
    key, and this is the reason its box receiver is given; L{ampcore.parse}
    and L{ampcore.BoxParser.feed} raise it.

    A remote, value-position L{amp.TooLong}: C{isKey} and C{isLocal} are
    false.

    @ivar maxBoxSize: the cap that was exceeded.
    @ivar size: what the box would have cost with its next key or value.
    """

    def __init__(self, maxBoxSize: int, size: int) -> None:
        amp.TooLong.__init__(self, False, False, None, None)
        self.maxBoxSize: int = maxBoxSize
        self.size: int = size
        self.args = (
            f"remote box too long: it would cost {size} bytes, over "
            f"maxBoxSize ({maxBoxSize} bytes)",
        )

    def __str__(self) -> str:
        return cast(str, self.args[0])  # set just above, always a str

    def __repr__(self) -> str:
        return f"BoxTooLong(maxBoxSize={self.maxBoxSize}, size={self.size})"
