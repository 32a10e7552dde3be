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

from ampcore import _ampcore


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


class BinaryBoxProtocol(_ampcore.ProtocolCore, StockBinaryBoxProtocol):
    __doc__ = StockBinaryBoxProtocol.__doc__
    if TYPE_CHECKING:

        def __init__(self, boxReceiver: Any) -> None: ...

    _ampcoreStock: type[StockBinaryBoxProtocol] = StockBinaryBoxProtocol


class AMP(BinaryBoxProtocol, BoxDispatcher, StockAMP):
    __doc__ = StockAMP.__doc__
    if TYPE_CHECKING:

        def __init__(self, boxReceiver: Any = None, locator: Any = None) -> None: ...

    _ampcoreStock: type[StockAMP] = StockAMP


for _cls in (BoxDispatcher, BinaryBoxProtocol, AMP):
    _cls.__module__ = "ampcore"
del _cls
