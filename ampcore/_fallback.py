"""
The codec's names backed by stock Twisted, for when the C extension is not
in use.  Thin adapters over twisted.protocols.amp; no copy of AMP lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from twisted.protocols import amp

from ampcore._errors import (
    BOX_STRING_COST,
    DEFAULT_MAX_BOX_SIZE,
    BoxTooLong,
    KeyTooLongError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def _checkedCap(maxBoxSize: int | None) -> int | None:
    """C{maxBoxSize} checked as the C extension checks it."""
    if maxBoxSize is None:
        return None
    if not isinstance(maxBoxSize, int):
        raise TypeError(
            f"maxBoxSize must be an int or None, not {type(maxBoxSize).__name__}"
        )
    if maxBoxSize < 0:
        raise ValueError("maxBoxSize must not be negative")
    return maxBoxSize


def serialize(box: Mapping[bytes, bytes], /) -> bytes:
    """Encode C{box} with C{AmpBox.serialize}."""
    result: bytes = amp.AmpBox.serialize(cast(amp.AmpBox, box))
    return result


def parse(
    data: ReadableBuffer | None, maxBoxSize: int | None = DEFAULT_MAX_BOX_SIZE
) -> list[amp.AmpBox]:
    """Decode with C{amp.parseString}, raising L{KeyTooLongError} where
    stock's helper fails on its missing C{loseConnection}, and
    L{BoxTooLong} for a box that would cost more than C{maxBoxSize}."""
    parser = BoxParser(maxBoxSize)
    boxes = parser.feed(data if data is not None else b"")
    if parser.keyLengthLimitExceeded:
        raise KeyTooLongError(cast(int, parser._badLength), cast(int, parser._badOffset))
    return boxes


class _Receiver:
    """Box receiver and transport for a stock BinaryBoxProtocol."""

    def __init__(self, parser: BoxParser) -> None:
        self.parser = parser

    def startReceivingBoxes(self, sender: object) -> None:
        pass

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.parser._boxes.append(box)

    def stopReceivingBoxes(self, reason: object) -> None:
        pass

    def loseConnection(self) -> None:
        pass


class BoxParser:
    """Stock L{amp.BinaryBoxProtocol} behind the L{ampcore.BoxParser} API."""

    def __init__(self, maxBoxSize: int | None = DEFAULT_MAX_BOX_SIZE) -> None:
        self._maxBoxSize = _checkedCap(maxBoxSize)
        self._boxSize = 0  # what the box being assembled costs
        self._wantValue = False
        self._tooBig: int | None = None  # the size that broke the cap
        self._tooBigRaised = False
        self._boxes: list[amp.AmpBox] = []
        self._protocol = amp.BinaryBoxProtocol(_Receiver(self))
        self._protocol.makeConnection(self._protocol.boxReceiver)
        # Bytes since the last complete box; offsets below are into it.
        self._received = b""
        self._streamOffset = 0  # where _received starts in the stream
        self._consumed = 0  # what stock has framed as strings so far
        self._boxEnd = 0  # where the last complete box ended
        self._badLength: int | None = None
        self._badOffset: int | None = None
        self._feeding = False
        protocol = self._protocol
        stringReceived: Callable[[bytes], None] = protocol.stringReceived

        def countingStringReceived(string: bytes) -> None:
            if self._wantValue or string:
                self._count(len(string))
                self._wantValue = not self._wantValue
            else:
                self._boxSize = 0
            self._consumed += 2 + len(string)
            before = len(self._boxes)
            stringReceived(string)
            if len(self._boxes) != before:
                self._boxEnd = self._consumed

        def lengthLimitExceeded(length: int) -> None:
            self._badLength = length
            self._badOffset = self._streamOffset + self._consumed
            amp.BinaryBoxProtocol.lengthLimitExceeded(protocol, length)

        protocol.stringReceived = countingStringReceived  # type: ignore[method-assign]
        protocol.lengthLimitExceeded = lengthLimitExceeded  # type: ignore[method-assign]

    def _tooBigError(self, cost: int) -> BoxTooLong:
        self._tooBig = self._boxSize + cost
        return BoxTooLong(cast(int, self._maxBoxSize), self._tooBig)

    def _count(self, length: int) -> None:
        """Count a key or value of C{length} bytes against the cap, as the
        C reader does: before it is kept."""
        cost = length + BOX_STRING_COST
        if self._maxBoxSize is not None and self._boxSize + cost > self._maxBoxSize:
            raise self._tooBigError(cost)
        self._boxSize += cost

    def _countPrefix(self) -> None:
        """The C reader counts a string as soon as its length prefix has
        come: do the same for the bytes stock has not framed yet."""
        rest = self._received[self._consumed :]
        if len(rest) >= 2:
            length = int.from_bytes(rest[:2], "big")
            if self._wantValue or length <= amp.MAX_KEY_LENGTH:
                cost = length + BOX_STRING_COST
                if (
                    self._maxBoxSize is not None
                    and self._boxSize + cost > self._maxBoxSize
                ):
                    raise self._tooBigError(cost)

    @property
    def maxBoxSize(self) -> int | None:
        return self._maxBoxSize

    @maxBoxSize.setter
    def maxBoxSize(self, value: int | None) -> None:
        self._maxBoxSize = _checkedCap(value)

    @property
    def keyLengthLimitExceeded(self) -> bool:
        return bool(self._protocol._keyLengthLimitExceeded)

    @property
    def unprocessed(self) -> bytes:
        if self._tooBig is not None:
            return b""
        return self._received[self._boxEnd :]

    def feed(self, data: ReadableBuffer) -> list[amp.AmpBox]:
        with memoryview(data) as view:
            if not view.c_contiguous:
                raise BufferError("memoryview: underlying buffer is not C-contiguous")
            chunk = view.tobytes()
        if self._feeding:
            raise RuntimeError("BoxParser.feed() re-entered")
        self._feeding = True
        try:
            if self._tooBig is not None:
                if self._boxes and self._tooBigRaised:
                    boxes, self._boxes = self._boxes, []
                    return boxes
                self._tooBigRaised = True
                raise BoxTooLong(cast(int, self._maxBoxSize), self._tooBig)
            if self.keyLengthLimitExceeded:
                boxes, self._boxes = self._boxes, []
                self.lengthLimitExceeded(cast(int, self._badLength))
                return boxes
            self._received += chunk
            try:
                self._protocol.dataReceived(chunk)
                if not self.keyLengthLimitExceeded:
                    self._countPrefix()
            except BoxTooLong:
                self._tooBigRaised = True
                self._received = b""
                raise
            # (On any error the boxes completed so far stay in _boxes, for
            # the next feed to return first.)
            boxes, self._boxes = self._boxes, []
            if self.keyLengthLimitExceeded:
                self.lengthLimitExceeded(cast(int, self._badLength))
            else:
                self._received = self._received[self._boxEnd :]
                self._streamOffset += self._boxEnd
                self._consumed -= self._boxEnd
                self._boxEnd = 0
            return boxes
        finally:
            self._feeding = False

    def lengthLimitExceeded(self, length: int, /) -> None:
        """Called when a key length prefix above 255 arrives."""
