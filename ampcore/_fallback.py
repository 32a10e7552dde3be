"""
The codec's names backed by stock Twisted, for when the C extension is not
in use.  Thin adapters over twisted.protocols.amp; no copy of AMP lives here.
"""

from twisted.protocols import amp

from ampcore._errors import (
    BOX_STRING_COST,
    DEFAULT_MAX_BOX_SIZE,
    BoxTooLong,
    KeyTooLongError,
)

_UNLIMITED = object()


def _checkedCap(maxBoxSize):
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


def serialize(box):
    """Encode C{box} with C{AmpBox.serialize}."""
    return amp.AmpBox.serialize(box)


def parse(data, maxBoxSize=DEFAULT_MAX_BOX_SIZE):
    """Decode with C{amp.parseString}, raising L{KeyTooLongError} where
    stock's helper fails on its missing C{loseConnection}, and
    L{BoxTooLong} for a box that would cost more than C{maxBoxSize}."""
    parser = BoxParser(maxBoxSize)
    boxes = parser.feed(data if data is not None else b"")
    if parser.keyLengthLimitExceeded:
        raise KeyTooLongError(parser._badLength, parser._badOffset)
    return boxes


class _Receiver:
    """Box receiver and transport for a stock BinaryBoxProtocol."""

    def __init__(self, parser):
        self.parser = parser

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.parser._boxes.append(box)

    def stopReceivingBoxes(self, reason):
        pass

    def loseConnection(self):
        pass


class BoxParser:
    """Stock L{amp.BinaryBoxProtocol} behind the L{ampcore.BoxParser} API."""

    def __init__(self, maxBoxSize=DEFAULT_MAX_BOX_SIZE):
        self._maxBoxSize = _checkedCap(maxBoxSize)
        self._boxSize = 0  # what the box being assembled costs
        self._wantValue = False
        self._tooBig = None  # the size that broke the cap
        self._tooBigRaised = False
        self._boxes = []
        self._protocol = amp.BinaryBoxProtocol(_Receiver(self))
        self._protocol.makeConnection(self._protocol.boxReceiver)
        # Bytes since the last complete box; offsets below are into it.
        self._received = b""
        self._streamOffset = 0  # where _received starts in the stream
        self._consumed = 0  # what stock has framed as strings so far
        self._boxEnd = 0  # where the last complete box ended
        self._badLength = None
        self._badOffset = None
        self._feeding = False
        protocol = self._protocol
        stringReceived = protocol.stringReceived

        def countingStringReceived(string):
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

        def lengthLimitExceeded(length):
            self._badLength = length
            self._badOffset = self._streamOffset + self._consumed
            amp.BinaryBoxProtocol.lengthLimitExceeded(protocol, length)

        protocol.stringReceived = countingStringReceived
        protocol.lengthLimitExceeded = lengthLimitExceeded

    def _count(self, length):
        """Count a key or value of C{length} bytes against the cap, as the
        C reader does: before it is kept."""
        cost = length + BOX_STRING_COST
        if self._maxBoxSize is not None and self._boxSize + cost > self._maxBoxSize:
            self._tooBig = self._boxSize + cost
            raise BoxTooLong(self._maxBoxSize, self._tooBig)
        self._boxSize += cost

    def _countPrefix(self):
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
                    self._tooBig = self._boxSize + cost
                    raise BoxTooLong(self._maxBoxSize, self._tooBig)

    @property
    def maxBoxSize(self):
        return self._maxBoxSize

    @maxBoxSize.setter
    def maxBoxSize(self, value):
        self._maxBoxSize = _checkedCap(value)

    @property
    def keyLengthLimitExceeded(self):
        return self._protocol._keyLengthLimitExceeded

    @property
    def unprocessed(self):
        if self._tooBig is not None:
            return b""
        return self._received[self._boxEnd :]

    def feed(self, data):
        with memoryview(data) as view:
            if not view.c_contiguous:
                raise BufferError("memoryview: underlying buffer is not C-contiguous")
            data = view.tobytes()
        if self._feeding:
            raise RuntimeError("BoxParser.feed() re-entered")
        self._feeding = True
        try:
            if self._tooBig is not None:
                if self._boxes and self._tooBigRaised:
                    boxes, self._boxes = self._boxes, []
                    return boxes
                self._tooBigRaised = True
                raise BoxTooLong(self._maxBoxSize, self._tooBig)
            if self.keyLengthLimitExceeded:
                boxes, self._boxes = self._boxes, []
                self.lengthLimitExceeded(self._badLength)
                return boxes
            self._received += data
            try:
                self._protocol.dataReceived(data)
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
                self.lengthLimitExceeded(self._badLength)
            else:
                self._received = self._received[self._boxEnd :]
                self._streamOffset += self._boxEnd
                self._consumed -= self._boxEnd
                self._boxEnd = 0
            return boxes
        finally:
            self._feeding = False

    def lengthLimitExceeded(self, length):
        """Called when a key length prefix above 255 arrives."""
