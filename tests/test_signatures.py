"""
Calling ampcore's C methods with the wrong arguments raises what calling
stock Twisted's Python methods does: the same TypeError, word for word
(Python names the method by its qualified name and counts self).  And
inspect.signature (help(), IDEs, mypy's stubtest) reads from each C method
the parameters of the Python it stands for.
"""

import inspect

import pytest
from twisted.protocols import amp

import ampcore
from ampcore import _fallback
from helpers import needsExtension

pytestmark = needsExtension()
_ampcore = pytest.importorskip("ampcore._ampcore")

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


# ---- the signatures inspect reads ------------------------------------------------


def parameters(callable_, dropSelf=False):
    """(name, kind, default) of each parameter, without annotations; self
    dropped if asked (a C method's self is positional-only, as every
    built-in method's is, where a Python method's is not)."""
    params = list(inspect.signature(callable_).parameters.values())
    if dropSelf:
        assert params[0].name == "self", params
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


C_METHODS = sorted(
    (core.__name__, name)
    for core in (_ampcore.DispatcherCore, _ampcore.ProtocolCore)
    for name, attribute in vars(core).items()
    if type(attribute).__name__ == "method_descriptor"
)


def test_every_C_method_of_the_cores_is_checked():
    assert len(C_METHODS) == 13
    assert ("DispatcherCore", "callRemote") in C_METHODS
    assert ("ProtocolCore", "dataReceived") in C_METHODS


@pytest.mark.parametrize("core, name", C_METHODS)
def test_C_methods_have_the_signature_of_stocks(core, name):
    method = getattr(ampcore.AMP, name)
    assert method is vars(getattr(_ampcore, core))[name], "not the C method"
    assert parameters(method, dropSelf=True) == parameters(getattr(amp.AMP, name), dropSelf=True)


PUBLIC = [
    (_ampcore.parse, _fallback.parse, False),
    (_ampcore.serialize, _fallback.serialize, False),
    (_ampcore.BoxParser, _fallback.BoxParser, False),
    (_ampcore.BoxParser.feed, _fallback.BoxParser.feed, True),
    (_ampcore.BoxParser.lengthLimitExceeded, _fallback.BoxParser.lengthLimitExceeded, True),
]


@pytest.mark.parametrize("c, python, method", PUBLIC, ids=[p[1].__qualname__ for p in PUBLIC])
def test_public_C_callables_have_the_fallbacks_signature(c, python, method):
    assert parameters(c, method) == parameters(python, method)


def test_every_C_function_has_a_signature():
    for name, value in vars(_ampcore).items():
        if callable(value) and not isinstance(value, type):
            inspect.signature(value)  # raises ValueError if there is none
