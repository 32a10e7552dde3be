"""
The codec's names backed by stock Twisted, for when the C extension is not
in use.  Thin adapters over twisted.protocols.amp; no copy of AMP lives here.
"""

from twisted.protocols import amp

from ampcore._errors import KeyTooLongError


def serialize(box):
    """Encode C{box} with C{AmpBox.serialize}."""
    return amp.AmpBox.serialize(box)


def parse(data):
    """Decode with C{amp.parseString}, raising L{KeyTooLongError} where
    stock's helper fails on its missing C{loseConnection}."""
    parser = BoxParser()
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

    def __init__(self):
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

    @property
    def keyLengthLimitExceeded(self):
        return self._protocol._keyLengthLimitExceeded

    @property
    def unprocessed(self):
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
            if self.keyLengthLimitExceeded:
                self.lengthLimitExceeded(self._badLength)
                return []
            self._received += data
            self._protocol.dataReceived(data)
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
