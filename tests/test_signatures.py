"""
Calling ampcore's C methods with the wrong arguments raises what calling
stock Twisted's Python methods does: the same TypeError, word for word
(Python names the method by its qualified name and counts self).
"""

import pytest
from twisted.protocols import amp

import ampcore
from helpers import needsExtension

pytestmark = needsExtension()

BAD_CALLS = [
    ("_sendBoxCommand", (), {}),
    ("_sendBoxCommand", (b"c",), {}),
    ("_sendBoxCommand", (b"c", None, True, 4), {}),
    ("_sendBoxCommand", (b"c", None), {"x": 1}),
    ("_sendBoxCommand", (b"c", None), {"command": 1}),
    ("_sendBoxCommand", (), {"requiresAnswer": False}),
    ("callRemoteString", (), {}),
    ("callRemoteString", (b"c", True, 3), {}),
    ("callRemoteString", (b"c", True), {"requiresAnswer": False}),
    ("callRemoteString", (b"c",), {"command": b"d"}),
    ("_nextTag", (1,), {}),
    ("_nextTag", (), {"x": 1}),
    ("failAllOutgoing", (), {}),
    ("failAllOutgoing", (1, 2), {}),
    ("stopReceivingBoxes", (), {"why": 1}),
    ("ampBoxReceived", (), {}),
    ("ampBoxReceived", (1, 2), {}),
    ("_answerReceived", (), {}),
    ("_errorReceived", (), {"box": 1, "other": 2}),
    ("_commandReceived", (), {}),
    ("_safeEmit", (), {}),
    ("dataReceived", (), {}),
    ("dataReceived", (b"", b""), {}),
    ("sendBox", (), {}),
    ("sendBox", (), {"box": 1, "data": 2}),
]


@pytest.mark.parametrize("name, args, kw", BAD_CALLS)
def test_bad_arguments_raise_stocks_error(name, args, kw):
    errors = []
    for base in (amp.AMP, ampcore.AMP):
        with pytest.raises(TypeError) as info:
            getattr(base(), name)(*args, **kw)
        errors.append(str(info.value))
    assert errors[1] == errors[0]
