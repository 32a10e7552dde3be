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
        self._unprocessed = b""
        self._badLength = None
        self._badOffset = None
        # Count what stock consumes, string by string, to know where the
        # last complete box ended.
        consumed = [0]
        protocol = self._protocol
        stringReceived = protocol.stringReceived

        def countingStringReceived(string):
            consumed[0] += 2 + len(string)
            before = len(self._boxes)
            stringReceived(string)
            if len(self._boxes) != before:
                self._unprocessed = self._unprocessed[consumed[0]:]
                consumed[0] = 0

        def lengthLimitExceeded(length):
            self._badLength = length
            self._badOffset = consumed[0]
            amp.BinaryBoxProtocol.lengthLimitExceeded(protocol, length)

        protocol.stringReceived = countingStringReceived
        protocol.lengthLimitExceeded = lengthLimitExceeded
        self._consumed = consumed

    @property
    def keyLengthLimitExceeded(self):
        return self._protocol._keyLengthLimitExceeded

    @property
    def unprocessed(self):
        return self._unprocessed

    def feed(self, data):
        data = bytes(memoryview(data))
        if self.keyLengthLimitExceeded:
            self.lengthLimitExceeded(self._badLength)
            return []
        self._unprocessed += data
        self._protocol.dataReceived(data)
        boxes, self._boxes = self._boxes, []
        if self.keyLengthLimitExceeded:
            self.lengthLimitExceeded(self._badLength)
        return boxes

    def lengthLimitExceeded(self, length):
        """Called when a key length prefix above 255 arrives."""
