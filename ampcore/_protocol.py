"""
The drop-in classes: ampcore's C cores in front of Twisted's own classes.

Each class subclasses the stock one, so everything ampcore does not do in C
(TLS, protocol switching, descriptor passing, locators, connection logging,
callRemote's Command coding) is Twisted's own code, and isinstance checks,
zope.interface declarations and the Command.responder metaclass carry over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.protocols import amp as _amp
from twisted.python.failure import Failure

from ampcore import _ampcore
from ampcore._errors import DEFAULT_MAX_BOX_SIZE


def _stock(name: str) -> Any:
    cls = getattr(_amp, name)
    # If install() already ran (e.g. this module is reloaded), keep the
    # stock class, not ours.
    return getattr(cls, "_ampcoreStock", cls)


if TYPE_CHECKING:
    # What _stock() returns: Twisted's own classes.
    from twisted.protocols.amp import AMP as StockAMP
    from twisted.protocols.amp import BinaryBoxProtocol as StockBinaryBoxProtocol
    from twisted.protocols.amp import BoxDispatcher as StockBoxDispatcher
else:
    StockBoxDispatcher = _stock("BoxDispatcher")
    StockBinaryBoxProtocol = _stock("BinaryBoxProtocol")
    StockAMP = _stock("AMP")


class BoxDispatcher(_ampcore.DispatcherCore, StockBoxDispatcher):
    __doc__ = StockBoxDispatcher.__doc__
    if TYPE_CHECKING:  # Twisted's constructor, which Twisted leaves unannotated

        def __init__(self, locator: Any) -> None: ...

    _ampcoreStock: type[StockBoxDispatcher] = StockBoxDispatcher


def _connectionLostReason(
    protocol: _ampcore.ProtocolCore, reason: Failure
) -> Failure:
    """The reason a protocol that dropped its connection over a box too
    big gives its box receiver: that L{ampcore.BoxTooLong}, as stock gives
    an C{amp.TooLong} after an over-long key."""
    error = protocol._boxTooLong
    return reason if error is None else Failure(error)


class BinaryBoxProtocol(_ampcore.ProtocolCore, StockBinaryBoxProtocol):
    __doc__ = StockBinaryBoxProtocol.__doc__
    if TYPE_CHECKING:

        def __init__(self, boxReceiver: Any) -> None: ...

    _ampcoreStock: type[StockBinaryBoxProtocol] = StockBinaryBoxProtocol

    #: The most one box being received may cost, in bytes, or C{None} for
    #: no cap (stock has none): each key and value counts its length plus
    #: C{ampcore.BOX_STRING_COST}.  A box that would grow past it drops the
    #: connection, with an L{ampcore.BoxTooLong} as the reason.  Set it on
    #: a subclass or on one protocol.
    maxBoxSize: int | None = DEFAULT_MAX_BOX_SIZE

    # Stock's own override takes no default reason where Protocol's has
    # connectionDone; ours keeps stock's signature, so a call without a
    # reason fails as it does on stock.
    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        StockBinaryBoxProtocol.connectionLost(
            self, _connectionLostReason(self, reason)
        )

    connectionLost.__doc__ = StockBinaryBoxProtocol.connectionLost.__doc__


class AMP(BinaryBoxProtocol, BoxDispatcher, StockAMP):
    __doc__ = StockAMP.__doc__
    if TYPE_CHECKING:

        def __init__(self, boxReceiver: Any = None, locator: Any = None) -> None: ...

    _ampcoreStock: type[StockAMP] = StockAMP

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        StockAMP.connectionLost(self, _connectionLostReason(self, reason))

    connectionLost.__doc__ = StockAMP.connectionLost.__doc__


for _cls in (BoxDispatcher, BinaryBoxProtocol, AMP):
    _cls.__module__ = "ampcore"
del _cls
