"""
The codec's names backed by stock Twisted, for when the C extension is not
in use.  Thin adapters over twisted.protocols.amp; no copy of AMP lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from twisted.protocols import amp

from ampcore._errors import KeyTooLongError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def serialize(box: Mapping[bytes, bytes], /) -> bytes:
    """Encode C{box} with C{AmpBox.serialize}."""
    result: bytes = amp.AmpBox.serialize(cast(amp.AmpBox, box))
    return result


def parse(data: ReadableBuffer, /) -> list[amp.AmpBox]:
    """Decode with C{amp.parseString}, raising L{KeyTooLongError} where
    stock's helper fails on its missing C{loseConnection}."""
    parser = BoxParser()
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

    def __init__(self) -> None:
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

    @property
    def keyLengthLimitExceeded(self) -> bool:
        return bool(self._protocol._keyLengthLimitExceeded)

    @property
    def unprocessed(self) -> bytes:
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
            if self.keyLengthLimitExceeded:
                self.lengthLimitExceeded(cast(int, self._badLength))
                return []
            self._received += chunk
            self._protocol.dataReceived(chunk)
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
