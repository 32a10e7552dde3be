"""
Differential tests of ampcore's Command argument coding in C
(ampcore/schema.h, ampcore/arguments.h) against stock Twisted.

C{_ampcore._makeArguments(cls, objects, proto)} and its siblings must do
what C{cls.makeArguments(objects, proto)} (and C{makeResponse},
C{parseArguments}, C{parseResponse}) do: the same box or dict, item for
item and type for type, or the same exception type and message; and the
same calls, in the same order, into arguments coded by their own methods.
C{_makeArgumentsFromKeywords(cls, proto, **kw)} must do what C{cls(**kw)}
followed by C{makeArguments(co.structured, proto)} does.

Self-contained on purpose: the Command classes are defined here.
"""

import datetime
import decimal
import gc
import sys
import tracemalloc
import weakref

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.protocols import amp
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.filepath import FilePath

import ampcore

pytestmark = pytest.mark.skipif(
    not ampcore.HAS_C_EXTENSION, reason="the C extension is not in use"
)

if ampcore.HAS_C_EXTENSION:
    from ampcore import _ampcore as C
else:  # pragma: no cover
    C = None

PROTO = object()
pyName = amp._wireNameToPythonIdentifier


# ==== comparing outcomes ====================================================


def normalize(value):
    """
    A comparable form of a result: types kept (bytes vs str, bool vs int,
    dict vs AmpBox), order of dict items kept, floats by repr (so NaN
    equals NaN and -0.0 differs from 0.0).
    """
    if isinstance(value, float):
        return (type(value), repr(value))
    if isinstance(value, dict):
        return (type(value), [(normalize(k), normalize(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value), [normalize(v) for v in value])
    if isinstance(value, Deferred):
        failures = []
        value.addErrback(failures.append)
        return (Deferred, [outcomeOfException(f.value) for f in failures])
    if isinstance(value, datetime.datetime):
        return (type(value), value.isoformat())
    if isinstance(value, (FilePath, decimal.Decimal)):
        return (type(value), repr(value))
    return (type(value), value)


def outcomeOfException(e):
    extra = repr(e) if isinstance(e, amp.TooLong) else None
    return ("raised", type(e), str(e), extra)


def outcome(f, /, *args, **kw):
    try:
        result = f(*args, **kw)
    except Exception as e:
        return outcomeOfException(e)
    return ("returned", normalize(result))


def stockFromKeywords(cls, proto, /, **kw):
    """What callRemote does before sending: cls(**kw), then makeArguments."""
    co = cls(**kw)
    return co.makeArguments(co.structured, proto)


def assertSame(stockCall, cCall, /, *args, **kw):
    expected = outcome(stockCall, *args, **kw)
    got = outcome(cCall, *args, **kw)
    assert got == expected
    return expected


# ==== the Commands ===========================================================


def simpleArguments(optional=False):
    return [
        (b"i", amp.Integer(optional=optional)),
        (b"s", amp.String(optional=optional)),
        (b"u", amp.Unicode(optional=optional)),
        (b"b", amp.Boolean(optional=optional)),
        (b"f", amp.Float(optional=optional)),
    ]


def listArguments(optional=False):
    return [
        (b"li", amp.ListOf(amp.Integer(), optional=optional)),
        (b"ls", amp.ListOf(amp.String(), optional=optional)),
        (b"lu", amp.ListOf(amp.Unicode(), optional=optional)),
        (b"lb", amp.ListOf(amp.Boolean(), optional=optional)),
        (b"lf", amp.ListOf(amp.Float(), optional=optional)),
    ]


def ampListArgument(optional=False):
    inner = amp.AmpList([(b"z", amp.Float()), (b"w", amp.String(optional=True))], optional=True)
    return amp.AmpList(
        [(b"x", amp.Integer()), (b"y", amp.Unicode(optional=True)), (b"n", inner)],
        optional=optional,
    )


class Simple(amp.Command):
    arguments = simpleArguments()
    response = simpleArguments(optional=True)


class Lists(amp.Command):
    arguments = listArguments()
    response = listArguments(optional=True)


class Nested(amp.Command):
    arguments = [(b"al", ampListArgument()), (b"i", amp.Integer(optional=True))]
    response = [(b"al", ampListArgument(optional=True))]


class OddNames(amp.Command):
    """Wire names that are not Python names, and all optional."""

    arguments = [
        (b"with-dash", amp.Integer(optional=True)),
        (b"from", amp.String(optional=True)),
        (b"with_dash", amp.Integer(optional=True)),
    ]
    response = [(b"class", amp.Boolean(optional=True))]


class Empty(amp.Command):
    pass


class BoxSub(amp.AmpBox):
    __slots__ = ()


class TypedBoxes(amp.Command):
    arguments = [(b"i", amp.Integer())]
    response = [(b"i", amp.Integer())]
    commandType = BoxSub
    responseType = BoxSub


class FailingBox(amp.AmpBox):
    __slots__ = ()

    def __init__(self):
        raise RuntimeError("no box today")


class FailingResponseType(amp.Command):
    response = [(b"i", amp.Integer())]
    responseType = FailingBox


LOG = []


class Recording(amp.Argument):
    """A user Argument: logs what stock's code hands it."""

    def toBox(self, name, strings, objects, proto):
        LOG.append(("toBox", name, sorted(objects), sorted(strings), proto is PROTO))
        return amp.Argument.toBox(self, name, strings, objects, proto)

    def fromBox(self, name, strings, objects, proto):
        LOG.append(("fromBox", name, sorted(strings), sorted(objects), proto is PROTO))
        return amp.Argument.fromBox(self, name, strings, objects, proto)

    def toString(self, inObject):
        return repr(inObject).encode("ascii")

    def fromString(self, inString):
        return inString.decode("ascii")


def instanceOverride():
    arg = amp.Integer()
    arg.toString = lambda obj: b"<%d>" % (obj,)
    arg.fromString = lambda s: ("parsed", s)
    return arg


class Mixed(amp.Command):
    arguments = [
        (b"a", amp.Integer()),
        (b"rec", Recording()),
        (b"path", amp.Path(optional=True)),
        (b"dec", amp.Decimal()),
        (b"when", amp.DateTime(optional=True)),
        (b"over", instanceOverride()),
        (b"z", amp.Unicode()),
        (b"lst", amp.AmpList([(b"r", Recording(optional=True)), (b"q", amp.Integer())])),
    ]
    response = arguments


COMMANDS = [Simple, Lists, Nested, OddNames, Empty, TypedBoxes]


def test_compiled_kinds():
    schema = C._commandSchema(Simple)
    assert schema.codedInC
    assert [row[3] for row in schema.arguments] == [
        "Integer", "String", "Unicode", "Boolean", "Float"
    ]
    assert [row[1] for row in C._commandSchema(OddNames).arguments] == [
        "with_dash", "From", "with_dash"
    ]
    kinds = [row[3] for row in C._commandSchema(Mixed).arguments]
    # The instance with a method of its own is still an exact Integer: it
    # is told apart on each use, not by kind.
    assert kinds[:6] == ["Integer", "python", "python", "python", "python", "Integer"]
    assert C._commandSchema(Lists).arguments[0][3] == "ListOf(Integer)"
    assert C._commandSchema(Simple) is C._commandSchema(Simple)
    assert schema.stockMethods == {
        "makeArguments", "makeResponse", "parseArguments", "parseResponse",
        "construction", "_doCommand",
    }
    assert schema.commandName == b"Simple" and schema.requiresAnswer is True
    assert "makeResponse" not in C._commandSchema(amp.ProtocolSwitchCommand).stockMethods
    assert "construction" not in C._commandSchema(amp.StartTLS).stockMethods


# ==== values =================================================================

NASTY = st.sampled_from(
    [
        None, True, False, 0, -1, 2**64, -(2**200), 10**5000, 1.5, float("nan"),
        float("inf"), float("-inf"), -0.0, "", "text", "\ud800", "a\udfffb",
        "\u00e9\U0001f600", b"", b"bytes", b"\xff", bytearray(b"ba"), [], [1, "x"],
        {}, {"x": 1}, (1, 2), object(), decimal.Decimal("1.5"),
    ]
)
TEXT = st.text(max_size=20) | st.sampled_from(["\ud800", "a\udfff", "x" * 65535, "é" * 32768])
BYTES = st.binary(max_size=20) | st.sampled_from([b"x" * 65535, b"x" * 65536])
INTEGERS = (
    st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.booleans()
    | st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1])
)
FLOATS = st.floats() | st.sampled_from([float("nan"), -0.0, 1e16, 1e-7, 5e-324])

GOOD = {
    amp.Integer: INTEGERS,
    amp.String: BYTES,
    amp.Unicode: TEXT,
    amp.Boolean: st.booleans() | NASTY,
    amp.Float: FLOATS,
}


def goodValue(arg):
    if isinstance(arg, amp.ListOf):
        return st.lists(goodValue(arg.elementType), max_size=4) | st.tuples(
            goodValue(arg.elementType)
        )
    if isinstance(arg, amp.AmpList):
        return st.lists(objectsFor(arg.subargs, extra=False), max_size=3)
    return GOOD[type(arg)]


def anyValue(arg):
    return st.one_of(goodValue(arg), goodValue(arg), goodValue(arg), NASTY)


@st.composite
def objectsFor(draw, arglist, extra=True, complete=False):
    objects = {}
    for name, arg in arglist:
        if complete:
            choice = "value"
        else:
            choice = draw(st.sampled_from(["value", "value", "value", "missing", "none"]))
        if choice == "value":
            objects[pyName(name)] = draw(anyValue(arg) if extra else goodValue(arg))
        elif choice == "none":
            objects[pyName(name)] = None
    if extra and draw(st.integers(0, 5)) == 0:
        objects[draw(st.sampled_from(["unexpected", "i", "From", "from", "with_dash"]))] = 1
    items = draw(st.permutations(list(objects.items())))
    return dict(items)


COMMAND = st.sampled_from(COMMANDS)


@st.composite
def commandAndObjects(draw, response=False, complete=False):
    cmd = draw(COMMAND)
    arglist = cmd.response if response else cmd.arguments
    return cmd, draw(objectsFor(arglist, extra=not complete, complete=complete))


# ==== the four operations ===================================================


@given(commandAndObjects())
@example((Simple, {"i": 10**5000, "s": b"", "u": "", "b": 0, "f": 0.0}))
@example((Simple, {"i": True, "s": "str stays", "u": "\ud800", "b": [], "f": 1}))
@example((Lists, {"li": [1], "ls": [b"x" * 65536], "lu": [], "lb": [], "lf": []}))
@example((Lists, {"li": [1], "ls": ["str", b"x"], "lu": [], "lb": [], "lf": []}))
@example((Nested, {"al": [{"x": 1, "n": [{"z": 1.0, "w": b"x" * 65536}]}]}))
@example((Nested, {"al": [{"x": 1}, 5]}))
@example((OddNames, {"with_dash": 1, "From": b"x"}))
def test_make_arguments(case):
    cmd, objects = case
    assertSame(cmd.makeArguments, lambda o, p: C._makeArguments(cmd, o, p), objects, PROTO)


@given(commandAndObjects(complete=True))
def test_make_arguments_complete(case):
    """Every argument given a value of its own type: the success paths."""
    cmd, objects = case
    assertSame(cmd.makeArguments, lambda o, p: C._makeArguments(cmd, o, p), objects, PROTO)
    assertSame(
        lambda **kw: stockFromKeywords(cmd, PROTO, **kw),
        lambda **kw: C._makeArgumentsFromKeywords(cmd, PROTO, **kw),
        **objects,
    )


@given(commandAndObjects(response=True))
@example((Nested, {"al": [{"x": 1, "n": None}]}))
def test_make_response(case):
    cmd, objects = case
    assertSame(cmd.makeResponse, lambda o, p: C._makeResponse(cmd, o, p), objects, PROTO)


def test_make_response_failing_response_type():
    stock = outcome(FailingResponseType.makeResponse, {"i": 1}, PROTO)
    assert stock[1][0] is Deferred and stock[1][1][0][1] is RuntimeError
    assert outcome(C._makeResponse, FailingResponseType, {"i": 1}, PROTO) == stock


@given(commandAndObjects())
@example((Simple, {}))
@example((Simple, {"i": 1, "unexpected": 2}))
@example((OddNames, {"From": None}))
def test_make_arguments_from_keywords(case):
    cmd, objects = case
    assertSame(
        lambda **kw: stockFromKeywords(cmd, PROTO, **kw),
        lambda **kw: C._makeArgumentsFromKeywords(cmd, PROTO, **kw),
        **objects,
    )


def test_forgotten_arguments_message():
    expected = assertSame(
        lambda **kw: stockFromKeywords(Simple, PROTO, **kw),
        lambda **kw: C._makeArgumentsFromKeywords(Simple, PROTO, **kw),
        s=b"x",
        unexpected=1,
    )
    assert expected[:3] == ("raised", amp.InvalidSignature, "forgot i, u, b, f for b'Simple'")


JUNK = st.sampled_from(
    [
        b"", b"12x", b" 12 ", b"1_000", b"+5", b"-0", b"007", b"\xff", b"true",
        b"True", b"False", b"nan", b"-inf", b"1e500", b"0x10", b"1" * 5000,
        b"\x00\x01", b"\x00\x05ab", b"\x00", b"\x00\x00\x00", b"\x01\x00" + b"k" * 300,
        b"\x00\x01x\x00\x01", b"\xc3", b"\xed\xa0\x80",
    ]
)


@st.composite
def commandAndBox(draw, response=False):
    cmd = draw(COMMAND)
    arglist = cmd.response if response else cmd.arguments
    objects = draw(objectsFor(arglist, extra=False))
    try:
        box = amp._objectsToStrings(objects, arglist, amp.AmpBox(), None)
        box = amp.AmpBox(box)
        for value in box.values():
            value.decode("latin-1")  # all bytes
    except Exception:
        box = amp.AmpBox()
    for key in draw(st.lists(st.sampled_from([n for n, _ in arglist] + [b"extra"]), max_size=3)):
        action = draw(st.sampled_from(["drop", "junk", "truncate", "str"]))
        if action == "drop":
            box.pop(key, None)
        elif action == "junk":
            box[key] = draw(JUNK | st.binary(max_size=8))
        elif action == "truncate" and box.get(key):
            box[key] = box[key][:-1]
        elif action == "str":
            box[key] = "a str"
    if draw(st.booleans()):
        box = dict(box)
    return cmd, box


@given(commandAndBox())
@example((Simple, amp.AmpBox(i=b"1_0", s=b"", u=b"\xff", b=b"True", f=b"nan")))
@example((Simple, amp.AmpBox(i=b" -3 ", s=b"", u=b"\xed\xa0\x80", b=b"yes", f=b"x")))
@example((Lists, amp.AmpBox(li=b"\x00\x011\x00\x02", ls=b"", lu=b"", lb=b"", lf=b"")))
@example((Nested, amp.AmpBox(al=b"\x01\x00" + b"k" * 300)))
@example((Nested, amp.AmpBox(al=b"\x00\x01x\x00\x011\x00\x00\x00\x01x")))
def test_parse_arguments(case):
    cmd, box = case
    before = dict(box)
    assertSame(cmd.parseArguments, lambda b, p: C._parseArguments(cmd, b, p), box, PROTO)
    assert dict(box) == before


@given(commandAndBox(response=True))
def test_parse_response(case):
    cmd, box = case
    assertSame(cmd.parseResponse, lambda b, p: C._parseResponse(cmd, b, p), box, PROTO)


@given(commandAndObjects())
def test_round_trip(case):
    cmd, objects = case
    try:
        box = cmd.makeArguments(objects, PROTO)
        wire = amp.parseString(box.serialize())[0]
    except Exception:
        return
    assert outcome(C._makeArguments, cmd, objects, PROTO) == ("returned", normalize(box))
    assertSame(cmd.parseArguments, lambda b, p: C._parseArguments(cmd, b, p), wire, PROTO)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f(Simple, None, PROTO),
        lambda f: f(Simple, 5, PROTO),
        lambda f: f(Simple, [("i", 1)], PROTO),
        lambda f: f(Simple, amp.AmpBox(i=b"1"), PROTO),
        lambda f: f(42, {}, PROTO),
        lambda f: f(Empty, {}, PROTO),
        lambda f: f(Empty, amp.AmpBox(), PROTO),
    ],
)
@pytest.mark.parametrize("op", ["makeArguments", "makeResponse", "parseArguments", "parseResponse"])
def test_odd_inputs(call, op):
    stock = lambda cls, *a: getattr(amp.Command, op).__func__(cls, *a)  # noqa: E731
    assert outcome(call, getattr(C, "_" + op)) == outcome(call, stock)


# ==== arguments coded by their own methods ==================================

MIXED_OBJECTS = {
    "a": 1,
    "rec": ["anything", 1],
    "path": FilePath(b"/tmp/x"),
    "dec": decimal.Decimal("-1.50"),
    "when": datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=amp.utc),
    "over": 7,
    "z": "zed",
    "lst": [{"q": 1, "r": (1,)}, {"q": 2}],
}


def logged(f, /, *args):
    del LOG[:]
    result = outcome(f, *args)
    return result, list(LOG)


@pytest.mark.parametrize(
    "objects",
    [
        MIXED_OBJECTS,
        {k: v for k, v in MIXED_OBJECTS.items() if k not in ("path", "when")},
        dict(MIXED_OBJECTS, path=None, when=None),
        {k: v for k, v in MIXED_OBJECTS.items() if k != "rec"},
        dict(MIXED_OBJECTS, dec="not a decimal"),
        dict(MIXED_OBJECTS, over="bad"),
        dict(MIXED_OBJECTS, lst=[{"q": 1}, {"r": 2}]),
        dict(reversed(list(MIXED_OBJECTS.items()))),
    ],
)
def test_mixed_make_and_parse(objects):
    for op in ("makeArguments", "makeResponse"):
        expected = logged(getattr(Mixed, op), objects, PROTO)
        assert logged(getattr(C, "_" + op), Mixed, objects, PROTO) == expected
    del LOG[:]
    stock = outcome(lambda: stockFromKeywords(Mixed, PROTO, **objects))
    stockLog = list(LOG)
    del LOG[:]
    assert outcome(lambda: C._makeArgumentsFromKeywords(Mixed, PROTO, **objects)) == stock
    assert LOG == stockLog
    try:
        box = Mixed.makeArguments(objects, PROTO)
    except Exception:
        return
    for variant in (box, amp.AmpBox(box, extra=b"x"), {k: v for k, v in box.items() if k != b"a"}):
        for op in ("parseArguments", "parseResponse"):
            expected = logged(getattr(Mixed, op), variant, PROTO)
            assert logged(getattr(C, "_" + op), Mixed, variant, PROTO) == expected


class Many(amp.Command):
    """More C-coded arguments than ampcore's view of a box remembers taken
    keys for (16) before a user Argument, then more: the working copy must
    be made midway, as stock's would be by then."""

    arguments = (
        [(b"i%02d" % i, amp.Integer()) for i in range(20)]
        + [(b"rec", Recording()), (b"i00", amp.Integer(optional=True))]
        + [(b"u", amp.Unicode(optional=True)), (b"rec2", Recording(optional=True))]
    )
    response = arguments


@pytest.mark.parametrize("extra", [{}, {"u": "x"}, {"rec2": 5}])
def test_many_arguments_before_a_user_argument(extra):
    objects = dict({"i%02d" % i: i for i in range(20)}, rec=[1], **extra)
    box = Many.makeArguments(objects, PROTO)
    for op in ("makeArguments", "makeResponse"):
        expected = logged(getattr(Many, op), objects, PROTO)
        assert logged(getattr(C, "_" + op), Many, objects, PROTO) == expected
    for variant in (box, dict(box), {k: v for k, v in box.items() if k != b"i05"}):
        for op in ("parseArguments", "parseResponse"):
            expected = logged(getattr(Many, op), variant, PROTO)
            assert logged(getattr(C, "_" + op), Many, variant, PROTO) == expected


class ThreeIntegers(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer()), (b"c", amp.Integer(optional=True))]
    response = arguments


class ChangesTheDict:
    """An Integer value whose conversion changes the dict it came from:
    stock codes from a copy made before, which the change cannot reach."""

    def __init__(self, objects):
        self.objects = objects

    def __int__(self):
        self.objects["b"] = 999
        self.objects.pop("c", None)
        return 5


@pytest.mark.parametrize("op", ["makeArguments", "makeResponse"])
def test_a_value_that_changes_the_dict_being_coded(op):
    def objects():
        d = {"b": 1, "c": 2}
        d["a"] = ChangesTheDict(d)
        return d

    expected = logged(getattr(ThreeIntegers, op), objects(), PROTO)
    assert expected[0][0] == "returned"
    assert logged(getattr(C, "_" + op), ThreeIntegers, objects(), PROTO) == expected


def test_mixed_round_trip_values():
    box = C._makeArguments(Mixed, MIXED_OBJECTS, PROTO)
    assert box[b"over"] == b"<7>"
    parsed = C._parseArguments(Mixed, amp.parseString(box.serialize())[0], PROTO)
    assert parsed["over"] == ("parsed", b"<7>")
    assert parsed["path"] == FilePath("/tmp/x")
    assert parsed["dec"] == decimal.Decimal("-1.50")


class Descriptorish(amp.Command):
    arguments = [(b"fd", amp.Descriptor()), (b"i", amp.Integer())]


class FakeProto:
    def __init__(self):
        self.sent = []

    def _sendFileDescriptor(self, fd):
        self.sent.append(fd)
        return len(self.sent)

    def _getDescriptor(self, n):
        return ("fd", n)


def test_descriptor_uses_the_protocol():
    stockProto, cProto = FakeProto(), FakeProto()
    expected = outcome(Descriptorish.makeArguments, {"fd": 5, "i": 1}, stockProto)
    assert outcome(C._makeArguments, Descriptorish, {"fd": 5, "i": 1}, cProto) == expected
    assert stockProto.sent == cProto.sent == [5]
    box = amp.AmpBox(fd=b"1", i=b"2")
    assertSame(Descriptorish.parseArguments,
               lambda b, p: C._parseArguments(Descriptorish, b, p), box, FakeProto())


# ==== classes and arguments changed after first use ========================


def both(cmd, objects=None, box=None):
    """Compare all four operations on cmd now."""
    if objects is not None:
        assertSame(cmd.makeArguments, lambda o, p: C._makeArguments(cmd, o, p), objects, PROTO)
        assertSame(cmd.makeResponse, lambda o, p: C._makeResponse(cmd, o, p), objects, PROTO)
        assertSame(
            lambda **kw: stockFromKeywords(cmd, PROTO, **kw),
            lambda **kw: C._makeArgumentsFromKeywords(cmd, PROTO, **kw),
            **objects,
        )
    if box is not None:
        assertSame(cmd.parseArguments, lambda b, p: C._parseArguments(cmd, b, p), box, PROTO)
        assertSame(cmd.parseResponse, lambda b, p: C._parseResponse(cmd, b, p), box, PROTO)


def freshCommand():
    class Changing(amp.Command):
        arguments = [(b"a", amp.Integer()), (b"b", amp.String(optional=True))]
        response = [(b"a", amp.Integer())]

    return Changing


def test_reassigned_lists():
    cmd = freshCommand()
    both(cmd, {"a": 1, "b": b"x"}, amp.AmpBox(a=b"1", b=b"x"))
    first = C._commandSchema(cmd)
    cmd.arguments = [(b"a", amp.Float()), (b"c", amp.Boolean())]
    cmd.response = [(b"b", amp.String())]
    both(cmd, {"a": 1.5, "c": True}, amp.AmpBox(a=b"1.5", c=b"True", b=b"r"))
    both(cmd, {"a": 1, "b": b"x"}, amp.AmpBox(a=b"1", b=b"x"))
    assert C._commandSchema(cmd) is not first
    assert [row[0] for row in C._commandSchema(cmd).arguments] == [b"a", b"c"]


def test_lists_mutated_in_place():
    cmd = freshCommand()
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    cmd.arguments.append((b"new", amp.Unicode()))
    cmd.response.insert(0, (b"r", amp.Boolean(optional=True)))
    both(cmd, {"a": 1, "new": "é"}, amp.AmpBox(a=b"1", new=b"\xc3\xa9", r=b"False"))
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    cmd.arguments[0] = (b"a", amp.Boolean())
    both(cmd, {"a": 1, "new": "x"}, amp.AmpBox(a=b"True", new=b"x"))
    del cmd.arguments[:]
    both(cmd, {"a": 1}, amp.AmpBox(a=b"True"))


def test_other_attributes_reassigned():
    cmd = freshCommand()
    both(cmd, {"b": b"x"})
    cmd.commandName = b"renamed"
    assertSame(
        lambda **kw: stockFromKeywords(cmd, PROTO, **kw),
        lambda **kw: C._makeArgumentsFromKeywords(cmd, PROTO, **kw),
        b=b"x",
    )
    assert C._commandSchema(cmd).commandName == b"renamed"
    cmd.requiresAnswer = False
    assert C._commandSchema(cmd).requiresAnswer is False
    errors = {ValueError: b"VALUE"}
    cmd.errors = errors
    assert C._commandSchema(cmd).errors is errors
    cmd.commandType = BoxSub
    cmd.responseType = FailingBox
    both(cmd, {"a": 1})
    assert type(C._makeArguments(cmd, {"a": 1}, PROTO)) is BoxSub


def test_base_class_changed():
    base = freshCommand()

    class Derived(base):
        pass

    both(Derived, {"a": 1}, amp.AmpBox(a=b"1"))
    base.arguments = [(b"a", amp.Unicode())]
    both(Derived, {"a": "x"}, amp.AmpBox(a=b"x"))
    assert C._commandSchema(Derived).arguments[0][3] == "Unicode"
    base.makeArguments = classmethod(lambda cls, objects, proto: "overridden")
    assert "makeArguments" not in C._commandSchema(Derived).stockMethods
    # The C operation is Command.makeArguments itself, whatever cls has.
    assert C._makeArguments(Derived, {"a": "x"}, PROTO) == amp.AmpBox(a=b"x")


def test_arguments_changed_on_the_instance():
    cmd = freshCommand()
    a = cmd.arguments[0][1]
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    a.optional = True
    both(cmd, {"b": b"x"}, amp.AmpBox(b=b"x"))
    a.optional = "weird but true"
    both(cmd, {"b": b"x"}, amp.AmpBox(b=b"x"))
    a.optional = 0
    both(cmd, {"b": b"x"}, amp.AmpBox(b=b"x"))
    a.optional = False
    a.toString = lambda obj: b"instance"
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    a.fromStringProto = lambda s, proto: ("mine", s)
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    del a.toString, a.fromStringProto
    a.note = "an unrelated attribute"
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    a.retrieve = lambda d, name, proto: 42
    both(cmd, {"a": 1}, amp.AmpBox(a=b"1"))
    del a.retrieve
    a.__class__ = amp.Float
    both(cmd, {"a": 1.5}, amp.AmpBox(a=b"1.5"))


def test_container_arguments_changed():
    class Containers(amp.Command):
        arguments = [
            (b"l", amp.ListOf(amp.Integer())),
            (b"al", amp.AmpList([(b"x", amp.Integer())])),
        ]
        response = arguments

    objects = {"l": [1, 2], "al": [{"x": 1, "y": "z"}]}
    box = Containers.makeArguments(objects, PROTO)
    both(Containers, objects, box)
    listOf = Containers.arguments[0][1]
    ampList = Containers.arguments[1][1]
    listOf.elementType = amp.Unicode()
    both(Containers, {"l": ["a"], "al": []}, amp.AmpBox(l=b"\x00\x01a", al=b""))
    listOf.elementType.toString = lambda obj: b"elem"
    both(Containers, {"l": ["a"], "al": []}, amp.AmpBox(l=b"\x00\x01a", al=b""))
    listOf.elementType = amp.ListOf(amp.Integer())  # a list of lists: stock's code
    both(Containers, {"l": [[1]], "al": []}, amp.AmpBox(l=b"\x00\x04\x00\x011", al=b""))
    ampList.subargs.append((b"y", amp.Unicode()))
    both(Containers, {"l": [], "al": [{"x": 1, "y": "z"}]}, amp.AmpBox(l=b"", al=box[b"al"]))
    ampList.subargs = [(b"x", amp.Float())]
    both(Containers, {"l": [], "al": [{"x": 1.0}]}, amp.AmpBox(l=b"", al=box[b"al"]))
    assert C._commandSchema(Containers).arguments[1][3][1][0][3] == "Float"


class PatchedStock:
    """Monkeypatch a stock class for the duration."""

    def __init__(self, cls, name, value):
        self.cls, self.name, self.value = cls, name, value

    def __enter__(self):
        self.old = self.cls.__dict__.get(self.name, _MISSING)
        setattr(self.cls, self.name, self.value)

    def __exit__(self, *exc):
        if self.old is _MISSING:
            delattr(self.cls, self.name)
        else:
            setattr(self.cls, self.name, self.old)


_MISSING = object()


@pytest.mark.parametrize(
    "cls, name, value",
    [
        (amp.Integer, "toString", lambda self, obj: b"patched"),
        (amp.Integer, "fromString", lambda self, s: "patched"),
        (amp.Argument, "retrieve", lambda self, d, name, proto: 3),
        (amp.Argument, "toStringProto", lambda self, obj, proto: b"patched"),
        (amp.String, "fromStringProto", lambda self, s, proto: "patched"),
        (amp.Boolean, "toBox", lambda self, *a: None),
        (amp.Float, "fromBox", lambda self, *a: None),
        (amp.Unicode, "toString", lambda self, obj: b"patched"),
        (amp.ListOf, "toString", lambda self, obj: b"patched"),
        (amp.AmpList, "fromStringProto", lambda self, s, proto: "patched"),
        (amp.AmpBox, "copy", lambda self: amp.AmpBox(patched=b"1")),
        (amp.AmpBox, "serialize", lambda self: b"patched"),
        (amp.Argument, "optional", property(lambda self: True)),
        (Int16StringReceiver, "MAX_LENGTH", 0),
        (Int16StringReceiver, "dataReceived", lambda self, data: None),
    ],
)
def test_stock_classes_monkeypatched(cls, name, value):
    objects = {"i": 1, "s": b"s", "u": "u", "b": True, "f": 1.0}
    lists = {"li": [1], "ls": [b""], "lu": ["u"], "lb": [False], "lf": [2.0]}
    nested = {"al": [{"x": 1, "n": [{"z": 1.0}]}]}
    boxes = [(cmd, cmd.makeArguments(o, PROTO)) for cmd, o in
             [(Simple, objects), (Lists, lists), (Nested, nested)]]
    for cmd, o in [(Simple, objects), (Lists, lists), (Nested, nested)]:
        C._makeArguments(cmd, o, PROTO)  # compiled before the patch
    with PatchedStock(cls, name, value):
        for cmd, o in [(Simple, objects), (Lists, lists), (Nested, nested)]:
            both(cmd, o)
        for cmd, box in boxes:
            both(cmd, box=box)
    for cmd, o in [(Simple, objects), (Lists, lists), (Nested, nested)]:
        both(cmd, o)


def test_list_mutated_during_the_operation():
    cmd = freshCommand()

    class Mutator(amp.Argument):
        """Changes the list, and the next argument, while being coded."""

        def toBox(self, name, strings, objects, proto):
            cmd.arguments.append((b"late", amp.Integer(optional=True)))
            cmd.arguments[1][1].toString = lambda obj: b"changed"
            objects["late"] = 5  # stock's working copy, which C must use too
            strings[name] = b"m"

        def fromBox(self, name, strings, objects, proto):
            cmd.arguments.append((b"late", amp.Integer(optional=True)))
            cmd.arguments[1][1].fromString = lambda s: "changed"
            objects["m"] = strings.pop(name, None)

    def reset():
        cmd.arguments = [(b"m", Mutator()), (b"a", amp.Integer())]
        C._commandSchema(cmd)

    objects = {"a": 1}
    reset()
    stock = outcome(cmd.makeArguments, objects, PROTO)
    assert stock == outcome(lambda: amp.AmpBox(m=b"m", a=b"changed", late=b"5"))
    reset()
    assert outcome(C._makeArguments, cmd, objects, PROTO) == stock
    box = amp.AmpBox(m=b"x", a=b"1", late=b"2")
    reset()
    stock = outcome(cmd.parseArguments, box, PROTO)
    assert stock == outcome(lambda: {"m": b"x", "a": "changed", "late": 2})
    reset()
    assert outcome(C._parseArguments, cmd, box, PROTO) == stock


def test_uncompilable_classes_use_stock_code():
    class NonAscii(amp.Command):
        arguments = [(b"\xff", amp.Integer())]

    class ListItems(amp.Command):
        arguments = [[b"a", amp.Integer()]]
        response = ((b"a", amp.Integer()),)

    class SelfNested(amp.Command):
        inner = amp.AmpList([])
        inner.subargs.append((b"x", inner))
        arguments = [(b"n", inner)]

    assert not C._commandSchema(NonAscii).codedInC
    assert not C._commandSchema(ListItems).codedInC
    both(NonAscii, {}, amp.AmpBox())
    both(ListItems, {"a": 1}, amp.AmpBox(a=b"1"))
    both(SelfNested, {"n": []}, amp.AmpBox(n=b""))
    assert C._commandSchema(SelfNested).codedInC


def test_schema_does_not_keep_classes_alive():
    def make():
        cmd = freshCommand()
        C._makeArguments(cmd, {"a": 1}, PROTO)
        C._parseResponse(cmd, amp.AmpBox(a=b"1"), PROTO)
        return weakref.ref(cmd), weakref.ref(cmd.arguments[0][1])

    refs = [make() for _ in range(3)]
    gc.collect()
    assert [r() for pair in refs for r in pair] == [None] * 6


# ==== leaks ==================================================================

LEAK_OBJECTS = [
    (Simple, {"i": 1, "s": b"s", "u": "u", "b": True, "f": 1.5}),
    (Simple, {"i": 2**100, "s": b"s", "u": "\ud800", "b": True, "f": 1.5}),
    (Simple, {"i": 1, "s": b"s", "u": "u", "b": True, "f": 1}),
    (Simple, {"i": 1, "unexpected": 1}),
    (Simple, {"s": b"s"}),
    (Lists, {"li": [1, 2**70], "ls": [b"x"], "lu": ["é"], "lb": [1, 0], "lf": [0.5]}),
    (Lists, {"li": [1], "ls": [b"x" * 65536], "lu": [], "lb": [], "lf": []}),
    (Lists, {"li": [1], "ls": ["str"], "lu": [], "lb": [], "lf": []}),
    (Nested, {"al": [{"x": 1, "y": "why", "n": [{"z": 2.0}]}]}),
    (Nested, {"al": [{"x": 1, "n": [{"z": 2.0, "w": b"x" * 65536}]}]}),
    (Mixed, MIXED_OBJECTS),
    (Mixed, dict(MIXED_OBJECTS, dec="bad")),
    (TypedBoxes, {"i": 3}),
    (FailingResponseType, {"i": 3}),
]


def leakWorkload():
    del LOG[:]
    for cmd, objects in LEAK_OBJECTS:
        for op in (C._makeArguments, C._makeResponse):
            try:
                result = op(cmd, objects, PROTO)
            except Exception:
                continue
            if isinstance(result, Deferred):
                result.addErrback(lambda f: None)
                continue
            for parse in (C._parseArguments, C._parseResponse):
                for box in (result, {k: v for k, v in list(result.items())[1:]},
                            dict(result, **{k.decode(): b"\xff" for k in list(result)[:1]})):
                    try:
                        parse(cmd, box, PROTO)
                    except Exception:
                        pass
        try:
            C._makeArgumentsFromKeywords(cmd, PROTO, **objects)
        except Exception:
            pass
    # A class changed on every round, and classes created and dropped.
    cmd = freshCommand()
    C._makeArguments(cmd, {"a": 1}, PROTO)
    cmd.arguments = [(b"a", amp.Float())]
    C._makeArguments(cmd, {"a": 1.0}, PROTO)
    C._commandSchema(Simple)


def _growth(measure, iterations):
    growths = []
    for _ in range(3):
        gc.collect()
        before = measure()
        for _ in range(iterations):
            leakWorkload()
        gc.collect()
        growths.append(measure() - before)
    return min(growths)


def test_no_reference_leaks():
    """
    Every operation, succeeding and failing, many times: on a debug
    CPython the interpreter's reference total must not grow; everywhere,
    nor must the count of allocated blocks.
    """
    for _ in range(20):
        leakWorkload()
    if hasattr(sys, "gettotalrefcount"):
        growth = _growth(sys.gettotalrefcount, 200)
        assert growth < 200, f"reference total grew by {growth}"
    growth = _growth(sys.getallocatedblocks, 200)
    assert growth < 200, f"allocated blocks grew by {growth}"


def test_no_memory_growth_tracemalloc():
    tracemalloc.start()
    try:
        for _ in range(10):
            leakWorkload()
        growth = _growth(lambda: tracemalloc.get_traced_memory()[0], 30)
    finally:
        tracemalloc.stop()
    assert growth < 16 * 1024, f"traced memory grew by {growth} bytes"
