"""Exceptions ampcore adds on top of Twisted's own."""

from __future__ import annotations

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
