"""
Shared pytest configuration for the ampcore differential suite.

The helpers the test modules share live in C{helpers.py} next to this file;
this directory is put on C{sys.path} so they import it whatever pytest's
import mode is, and pytest rewrites the asserts in it as in the tests.  Only
this directory is added: the repository root (which holds the ampcore
I{source} package, without its compiled extension) is deliberately not, so
the tests exercise the installed ampcore.
"""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
pytest.register_assert_rewrite("helpers")

import ampcore  # noqa: E402

settings.register_profile(
    "ampcore",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Under AddressSanitizer everything is several times slower: fewer examples.
settings.register_profile(
    "sanitizer",
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("AMPCORE_HYPOTHESIS_PROFILE", "ampcore"))


def pytest_report_header(config):
    impl = "C extension" if ampcore.HAS_C_EXTENSION else "stock-backed fallback"
    return [
        f"ampcore: {impl} ({ampcore.__file__}); "
        f"AMPCORE_PUREPYTHON={os.environ.get('AMPCORE_PUREPYTHON', '')!r}"
    ]


_STOCK_NAMES = ("AmpBox", "BinaryBoxProtocol", "BoxDispatcher", "AMP", "parseString", "TooLong")


def _stockTwisted():
    from twisted.protocols import amp

    return {name: getattr(amp, name) for name in _STOCK_NAMES}


_STOCK_AT_IMPORT = _stockTwisted()


@pytest.fixture(autouse=True)
def _oracle_is_stock_twisted():
    """
    The oracle must be Twisted's own code: nothing may have swapped
    ampcore's classes into twisted.protocols.amp (ampcore.install()).
    """
    for name, obj in _stockTwisted().items():
        assert obj is _STOCK_AT_IMPORT[name], f"twisted.protocols.amp.{name} was replaced"
        assert getattr(obj, "__module__", None) == "twisted.protocols.amp", (name, obj)
    yield


# attrs' generated __repr__ (Twisted's addresses are attrs classes) guards
# against recursion with a thread-local set of the ids being repr'd, and
# removes an id in a ``finally`` clause that calls id() again.  If that call
# fails (a MemoryError from an allocation-failure sweep, a RecursionError at
# the stack limit), the id stays in the set, and any later object that gets
# the same address (an address made for the next fake transport) reprs as
# "..." for the rest of the process.  One CI run showed exactly that: a log
# line of test_responders read "PEER:...)" on the second side of a
# differential test, whatever ampcore did.  Each test starts with the guard
# empty, and the tests that left it otherwise are named in the summary.
_STALE_REPR_GUARD = []


def _attrsReprGuard():
    try:
        from attr import _compat
    except ImportError:  # attrs moved it: nothing to reset
        return None
    guard = getattr(getattr(_compat, "repr_context", None), "already_repring", None)
    return guard if isinstance(guard, set) else None


@pytest.fixture(autouse=True)
def _fresh_attrs_repr_guard(request):
    guard = _attrsReprGuard()
    if guard:
        guard.clear()
    yield
    guard = _attrsReprGuard()
    if guard:
        _STALE_REPR_GUARD.append(request.node.nodeid)
        guard.clear()


def pytest_terminal_summary(terminalreporter):
    if _STALE_REPR_GUARD:
        terminalreporter.write_sep("-", "attrs' repr guard left holding ids (reset)")
        for nodeid in _STALE_REPR_GUARD:
            terminalreporter.write_line(nodeid)
