"""
The override matrix of ampcore's Command fast paths.

callRemote's C path (ampcore/client.h) and the C serving of Command
responders (ampcore/responder.h) stand in for stock code only while the
names that code would use are stock's.  For each such name, on the client
side (callRemote, _sendBoxCommand, _nextTag, boxSender, sendBox, and the
Command's __init__, _doCommand, makeArguments, parseResponse, commandName,
requiresAnswer, reverseErrors, commandType) and on the server side
(dispatchCommand, locator, locateResponder, lookupFunction,
_wrapWithSerialization, _commandDispatch, _safeEmit, unhandledError, and the
Command's parseArguments, makeResponse, responseType, errors, fatalErrors,
allErrors), one differential scenario (L{helpers.differential}) runs with
the name overridden:

  - C{subclass}: in the body of the protocol or Command class;
  - C{instance}: set on the protocol instances (for a Command, by an
    C{__init__} that sets it on the Command instance callRemote makes);
  - C{later} / C{instance-later} / C{base-later}: set on the class, on the
    instances or on the Command's base class after a first exchange, when
    the fast path has compiled and cached what it could.

Two peers built on the implementation under test exchange three rounds of
calls (answers, a declared error, a raw callRemoteString, and at the end a
failure nobody handles on each side); the traces of stock and ampcore must
be equal.  Each case also says whether stock honours the override (a
method override leaves a mark in the trace; a value shows in the wire
bytes, the results or the connection state) and the test checks that it
did, or that it did not where Twisted itself ignores the change (a
subclass body's C{reverseErrors}, C{errors} changed after the Command class
was made, C{lookupFunction} set anywhere but a class body): no case can
pass by the override being silently skipped on both sides.
"""

import sys
import types

import pytest
from twisted.protocols import amp

from helpers import (
    Declared,
    Fatal,
    Pump,
    Trace,
    differential,
    makeClasses,
    needsExtension,
    recordState,
)

pytestmark = needsExtension()


class OtherError(Exception):
    """What a replaced reverseErrors turns DECLARED into."""


# ---- one run's world: a Command, a protocol class, two connected peers ---------------------


class World:
    """
    Fresh classes for one run (so that a change made to them cannot leak
    into the other implementation's run): C{PingBase} and its Command
    C{Ping}, a C{Quiet} Command that needs no answer, and C{Node}, a
    protocol on the implementation's AMP that responds to both and is used
    at both ends.
    """

    def __init__(self, ns, trace):
        self.ns = ns
        self.trace = trace

    def build(self, commandBody=(), nodeBody=()):
        w = self

        class PingBase(amp.Command):
            pass

        attrs = {
            "arguments": [
                (b"a", amp.Integer()),
                (b"s", amp.String()),
                (b"u", amp.Unicode(optional=True)),
            ],
            "response": [(b"total", amp.Integer()), (b"echo", amp.String())],
            "errors": {Declared: b"DECLARED"},
            "fatalErrors": {Fatal: b"FATAL"},
        }
        attrs.update(commandBody)
        Ping = type(PingBase)("Ping", (PingBase,), attrs)

        class Quiet(amp.Command):
            arguments = [(b"a", amp.Integer())]
            errors = {Declared: b"DECLARED"}
            requiresAnswer = False

        def ping(self, a, s, u=None):
            w.trace.add(self.label, "ping", a, s, u)
            if s == b"declared":
                raise Declared("declared %d" % a)
            return {"total": a + 1, "echo": s}

        def quiet(self, a):
            w.trace.add(self.label, "quiet", a)
            raise Declared("quiet, and nobody to tell")

        Ping.responder(ping)
        Quiet.responder(quiet)
        body = {"ping": ping, "quiet": quiet}
        body.update(nodeBody)
        Node = type(self.ns.base)("Node", (self.ns.base,), body)
        self.PingBase, self.Ping, self.Quiet, self.Node = PingBase, Ping, Quiet, Node
        self.ping = ping

    def connect(self):
        self.client, self.server = self.Node(), self.Node()
        self.client.label, self.server.label = "C", "S"
        self.pump = Pump(self.client, self.server, self.trace)

    def round(self, n):
        """
        One exchange.  The third ends the connection: a Quiet command whose
        responder fails has no one to answer (the server's unhandledError),
        and a failed call with no errback reaches the client's.
        """
        t, c = self.trace, self.client
        t.add("round", n)
        t.call("ok", c.callRemote, self.Ping, a=n, s=b"x", u="\u00e9")
        t.call("declared", c.callRemote, self.Ping, a=n, s=b"declared")
        t.watch("raw", c.callRemoteString(b"Ping", a=b"%d" % n, s=b"raw"))
        if n == 3:
            t.call("quiet", c.callRemote, self.Quiet, a=n)
            try:
                c.callRemote(self.Ping, a=n, s=b"declared")
            except Exception as e:
                t.add("raised", "unwatched", e)
        self.pump.pump()
        recordState(t, "C", c)
        recordState(t, "S", self.server)


# ---- the overrides -------------------------------------------------------------------------


def mark(w, name, *details):
    w.trace.add("override", name, *details)


def nodeMethod(name, transform=None):
    """
    An override of a protocol method: it leaves a mark, then calls the
    implementation's own method (and C{transform}s its result).
    """

    def value(w):
        original = getattr(w.ns.base, name)

        def override(self, *a, **kw):
            mark(w, name, self.label, a, kw)
            result = original(self, *a, **kw)
            return transform(result) if transform else result

        override.__name__ = name
        return override

    return value


class RecordingSender:
    """A box sender in front of the protocol: marks every box it sends."""

    def __init__(self, w, target):
        self.w = w
        self.target = target

    def sendBox(self, box):
        mark(self.w, "boxSender", self.target.label, box)
        return self.target.sendBox(box)

    def __getattr__(self, name):
        return getattr(self.target, name)


class RecordingLocator:
    """A locator in front of the protocol: marks every lookup."""

    def __init__(self, w, target):
        self.w = w
        self.target = target

    def locateResponder(self, name):
        mark(self.w, "locator", self.target.label, name)
        return self.target.locateResponder(name)


class RecordingDispatch(dict):
    """A _commandDispatch table that marks every lookup."""

    def __init__(self, w, table):
        dict.__init__(self, table)
        self.w = w

    def __contains__(self, name):
        mark(self.w, "_commandDispatch", "contains", name)
        return dict.__contains__(self, name)

    def __getitem__(self, name):
        mark(self.w, "_commandDispatch", "getitem", name)
        return dict.__getitem__(self, name)


def wrappingAttribute(name, wrapper):
    """
    For an instance attribute the protocol sets itself (boxSender,
    locator): on a class, a property whose getter wraps the value stored;
    on an instance, the wrapped current value.
    """

    def value(w):
        def get(self):
            return wrapper(w, self.__dict__[name])

        def set(self, v):
            self.__dict__[name] = v

        return property(get, set)

    def instanceValue(w, obj):
        return wrapper(w, getattr(obj, name))

    return value, instanceValue


def recordingDispatch(w):
    return RecordingDispatch(w, w.Node._commandDispatch)


def commandMethod(name, isClassmethod=True):
    """An override of a Command method: a mark, then Command's own."""
    original = amp.Command.__dict__[name]
    function = original.__func__ if isClassmethod else original

    def value(w):
        def override(first, *a, **kw):
            mark(w, name, a, kw)
            return function(first, *a, **kw)

        override.__name__ = name
        return classmethod(override) if isClassmethod else override

    def instanceValue(w, command):
        def override(*a, **kw):
            mark(w, name, "instance", a, kw)
            return function(type(command) if isClassmethod else command, *a, **kw)

        return override

    return value, instanceValue


def boxClass(name):
    """A box class whose construction leaves a mark: commandType, responseType."""

    def value(w):
        def __init__(self, *a, **kw):
            mark(w, name)
            amp.AmpBox.__init__(self, *a, **kw)

        return type("Marked" + name, (amp.AmpBox,), {"__init__": __init__})

    return value


def constant(v):
    return lambda w: v


def marked(name):
    def seen(trace):
        return any(e[:2] == ("override", name) for e in trace)

    return seen


def written(data):
    def seen(trace):
        return any(len(e) > 2 and e[1] == "write" and data in e[2] for e in trace)

    return seen


def returnedNone(trace):
    return ("returned", "ok", None) in trace


def firedWithOtherError(trace):
    return any(e[0] == "fired" and "OtherError" in repr(e) for e in trace)


def serverQuitBeforeTheLastRound(trace):
    last = trace.index(("round", 3))
    return ("S", "loseConnection") in trace[:last]


class Override:
    """
    How to override one name: C{value(w)}, the attribute for a class;
    C{instanceValue(w, obj)}, for an instance (None: not on instances);
    C{seen(stockTrace)}, whether the override showed.
    """

    def __init__(self, owner, value, instanceValue=None, seen=None):
        self.owner = owner  # "node" or "command"
        self.value = value
        self.instanceValue = instanceValue
        self.seen = seen

    def classFor(self, w, how):
        if how == "base-later":
            return w.PingBase
        return w.Ping if self.owner == "command" else w.Node


def _node(name, transform=None):
    value = nodeMethod(name, transform)
    return Override(
        "node",
        value,
        lambda w, obj: types.MethodType(value(w), obj),
        marked(name),
    )


def _command(name, isClassmethod=True, onInstance=True):
    value, instanceValue = commandMethod(name, isClassmethod)
    return Override("command", value, instanceValue if onInstance else None, marked(name))


def _initOverride():
    def value(w):
        def __init__(self, **kw):
            mark(w, "__init__", kw)
            amp.Command.__init__(self, **kw)

        return __init__

    return Override("command", value, None, marked("__init__"))


def _value(name, v, seen, onInstance=True):
    return Override(
        "command",
        constant(v),
        (lambda w, command: v) if onInstance else None,
        seen,
    )


_boxSender = wrappingAttribute("boxSender", RecordingSender)
_locator = wrappingAttribute("locator", RecordingLocator)


OVERRIDES = {
    # the client side: the protocol
    "callRemote": _node("callRemote"),
    "_sendBoxCommand": _node("_sendBoxCommand"),
    "_nextTag": _node("_nextTag", lambda tag: b"t" + tag),
    "boxSender": Override("node", _boxSender[0], _boxSender[1], marked("boxSender")),
    "sendBox": _node("sendBox"),
    # the client side: the Command
    "__init__": _initOverride(),
    "_doCommand": _command("_doCommand", isClassmethod=False),
    "makeArguments": _command("makeArguments"),
    "parseResponse": _command("parseResponse"),
    "commandName": _value("commandName", b"Renamed", written(b"Renamed")),
    "requiresAnswer": _value("requiresAnswer", False, returnedNone),
    "reverseErrors": _value(
        "reverseErrors", {b"DECLARED": OtherError}, firedWithOtherError
    ),
    "commandType": Override("command", boxClass("commandType"), None, marked("commandType")),
    # the server side: the protocol
    "dispatchCommand": _node("dispatchCommand"),
    "locator": Override("node", _locator[0], _locator[1], marked("locator")),
    "locateResponder": _node("locateResponder"),
    "lookupFunction": _node("lookupFunction"),
    "_wrapWithSerialization": _node("_wrapWithSerialization"),
    "_commandDispatch": Override(
        "node", recordingDispatch, lambda w, obj: recordingDispatch(w),
        marked("_commandDispatch"),
    ),
    "_safeEmit": _node("_safeEmit"),
    "unhandledError": _node("unhandledError"),
    # the server side: the Command
    # (The server calls these on the class: no instance is involved.)
    "parseArguments": _command("parseArguments", onInstance=False),
    "makeResponse": _command("makeResponse", onInstance=False),
    "responseType": Override("command", boxClass("responseType"), None, marked("responseType")),
    "errors": _value("errors", {Declared: b"RECODED"}, written(b"RECODED"), onInstance=False),
    "fatalErrors": _value(
        "fatalErrors", {Declared: b"FATALDECL"}, serverQuitBeforeTheLastRound,
        onInstance=False,
    ),
    "allErrors": _value("allErrors", {Declared: b"RECODED"}, written(b"RECODED"),
                        onInstance=False),
}

NODE_HOWS = ("subclass", "instance", "later", "instance-later")
COMMAND_HOWS = ("subclass", "later", "base-later", "instance")

# Where stock itself ignores the override: the check is then that ampcore
# ignores it too.
STOCK_IGNORES = {
    # Only a class body's lookupFunction is seen, by CommandLocator's
    # metaclass, which then installs a locateResponder that calls it.
    ("lookupFunction", "instance"),
    ("lookupFunction", "later"),
    ("lookupFunction", "instance-later"),
    # The metaclass replaces a body's _commandDispatch, reverseErrors and
    # allErrors with the ones it builds.
    ("_commandDispatch", "subclass-body"),
    ("reverseErrors", "subclass"),
    ("allErrors", "subclass"),
    # reverseErrors and allErrors are built from errors (and fatalErrors)
    # once, when the class is made.
    ("errors", "later"),
    ("errors", "base-later"),
    # Ping has its own, which a base's does not replace.
    ("commandName", "base-later"),
    ("reverseErrors", "base-later"),
    ("fatalErrors", "base-later"),
    ("allErrors", "base-later"),
}


def cases():
    out = []
    for name, override in OVERRIDES.items():
        hows = NODE_HOWS if override.owner == "node" else COMMAND_HOWS
        for how in hows:
            if how == "instance" and override.instanceValue is None:
                continue
            out.append((name, how))
    out.append(("_commandDispatch", "subclass-body"))
    out.append(("_commandDispatch", "later-mutated"))
    return out


CASES = cases()


def _setInstance(w, name, override):
    for obj in (w.client, w.server):
        setattr(obj, name, override.instanceValue(w, obj))


def _settingInit(w, name, override):
    def __init__(self, **kw):
        amp.Command.__init__(self, **kw)
        setattr(self, name, override.instanceValue(w, self))

    return __init__


def overrideShows(stock, name, how):
    seen = OVERRIDES[name].seen(stock)
    if (name, how) in STOCK_IGNORES:
        assert not seen, f"stock honoured {name} overridden by {how}"
    else:
        assert seen, f"the override of {name} ({how}) did not show in stock's run"


@pytest.mark.filterwarnings("ignore:Override locateResponder:PendingDeprecationWarning")
@pytest.mark.parametrize("name, how", CASES, ids=[f"{n}-{h}" for n, h in CASES])
@differential(expect=overrideShows)
def test_override(ns, trace, name, how):
    override = OVERRIDES[name]
    w = World(ns, trace)
    commandBody, nodeBody = {}, {}
    if how == "subclass-body":
        nodeBody[name] = RecordingDispatch(w, {})
    elif how == "subclass" and name != "_commandDispatch":
        if override.owner == "command":
            commandBody[name] = override.value(w)
        else:
            nodeBody[name] = override.value(w)
    if how == "instance" and override.owner == "command":
        commandBody["__init__"] = _settingInit(w, name, override)
    w.build(commandBody, nodeBody)
    if how == "subclass" and name == "_commandDispatch":
        # A body's table is replaced by the metaclass: set it on the
        # subclass once made.
        w.Node._commandDispatch = override.value(w)
    w.connect()
    if how == "instance" and override.owner == "node":
        _setInstance(w, name, override)
    w.round(1)
    if how in ("later", "base-later"):
        setattr(override.classFor(w, how), name, override.value(w))
    elif how == "instance-later":
        _setInstance(w, name, override)
    elif how == "later-mutated":
        # The class's own table, changed in place: another responder.
        def other(self, a, s, u=None):
            mark(w, "_commandDispatch", "other responder", a, s)
            return {"total": -a, "echo": b"other"}

        w.Node._commandDispatch[b"Ping"] = (w.Ping, other)
    w.round(2)
    w.round(3)


def test_every_name_is_in_the_matrix():
    """The names the brief of the fast paths lists, each with a case or more."""
    names = {name for name, how in CASES}
    assert names >= {
        "callRemote", "_sendBoxCommand", "_nextTag", "boxSender", "sendBox",
        "__init__", "_doCommand", "makeArguments", "parseResponse", "commandName",
        "requiresAnswer", "reverseErrors", "commandType", "dispatchCommand",
        "locator", "locateResponder", "lookupFunction", "_wrapWithSerialization",
        "_commandDispatch", "parseArguments", "makeResponse", "responseType",
        "errors", "fatalErrors", "_safeEmit", "unhandledError",
    }


# ---- the same names reached other ways ---------------------------------------------------


@pytest.mark.parametrize("twice", [False, True], ids=["once", "changed-back"])
@differential
def test_class_changed_back_and_forth(ns, trace, twice):
    """
    Each fast-path name of the Command set after first use and then
    removed again: the cached schema must follow both changes.
    """
    w = World(ns, trace)
    w.build()
    w.connect()
    w.round(1)
    names = ["makeArguments", "parseResponse", "parseArguments", "makeResponse",
             "_doCommand", "__init__", "commandType", "responseType"]
    for name in names:
        setattr(w.Ping, name, OVERRIDES[name].value(w))
    w.round(2)
    if twice:
        for name in names:
            delattr(w.Ping, name)
    w.round(3)


# ---- the fast paths do run when nothing is overridden ------------------------------------


def _stockFunctionsCalled(base):
    """
    The functions of twisted/protocols/amp.py that one exchange (the
    second) calls.  (The recording transport's amp.parseString runs in
    both.)
    """
    called = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == amp.__file__:
            called.add(frame.f_code.co_name)

    w = World(makeClasses(base), Trace())
    w.build()
    w.connect()
    w.round(1)  # compiles and caches
    sys.setprofile(profile)
    try:
        w.round(2)
    finally:
        sys.setprofile(None)
    return called


FAST_PATH_STANDS_IN_FOR = {
    "callRemote", "_doCommand", "_sendBoxCommand", "makeArguments", "parseResponse",
    "_massageError", "dispatchCommand", "locateResponder", "_wrapWithSerialization",
    "doit", "parseArguments", "makeResponse", "makeResponseFor", "checkKnownErrors",
    "_objectsToStrings", "_stringsToObjects", "_safeEmit", "_answerReceived",
    "_errorReceived", "_commandReceived", "_nextTag", "callRemoteString", "sendBox",
    "formatAnswer", "formatError", "toBox", "fromBox", "toString", "fromString",
    "toStringProto", "fromStringProto", "retrieve", "serialize", "copy",
}


def test_without_overrides_the_fast_paths_run():
    """
    The matrix above is only worth something if, without the override,
    ampcore takes its fast paths: none of the stock functions they stand
    in for runs in an exchange of a warm ampcore (while stock runs them
    all), so each case's equal trace shows the gate or the fast path
    honouring the override.
    """
    import ampcore

    stock = _stockFunctionsCalled(amp.AMP)
    assert stock >= FAST_PATH_STANDS_IN_FOR
    core = _stockFunctionsCalled(ampcore.AMP)
    assert core & FAST_PATH_STANDS_IN_FOR == set()


# ---- known differences -------------------------------------------------------------------
#
# callRemote's C path never makes the Command instance: it reads what
# _doCommand would read through `self.NAME` from the class instead, and
# evaluates `self.requiresAnswer` once where stock evaluates it three
# times, after _nextTag.  These scenarios show where that is seen.


class TruthRaises:
    def __bool__(self):
        raise ValueError("no truth value")


class Alternating:
    """True, False, True, ...: each evaluation is counted."""

    def __init__(self):
        self.evaluations = 0

    def __bool__(self):
        self.evaluations += 1
        return self.evaluations % 2 == 1


def _requiresAnswerTruthRaises():
    return {"requiresAnswer": TruthRaises()}


def _requiresAnswerAlternates():
    return {"requiresAnswer": Alternating()}


def _requiresAnswerProperty():
    return {"requiresAnswer": property(lambda self: False)}


def _reverseErrorsProperty():
    return {"reverseErrors": property(lambda self: {b"DECLARED": OtherError})}


def _getattributeOnInstances():
    def __getattribute__(self, name):
        if name == "commandName":
            return b"FromTheInstance"
        return object.__getattribute__(self, name)

    return {"__getattribute__": __getattribute__}


ODD_COMMANDS = {
    "requiresAnswer-truth-raises": _requiresAnswerTruthRaises,
    "requiresAnswer-truth-alternates": _requiresAnswerAlternates,
    "requiresAnswer-property": _requiresAnswerProperty,
    "reverseErrors-property": _reverseErrorsProperty,
    "__getattribute__-on-instances": _getattributeOnInstances,
}


@pytest.mark.parametrize("odd", sorted(ODD_COMMANDS))
@differential
def test_Command_attributes_read_through_the_instance(ns, trace, odd):
    """
    A requiresAnswer whose truth raises or changes, class attributes that
    are descriptors (set after the class is made: the metaclass wants
    plain values), a Command whose instances answer attribute lookups
    themselves: stock's _doCommand reads them all through the instance.
    """
    w = World(ns, trace)
    w.build()
    for name, value in ODD_COMMANDS[odd]().items():
        setattr(w.Ping, name, value)
    w.connect()
    w.round(1)
    w.round(2)
