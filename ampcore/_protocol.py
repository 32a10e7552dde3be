"""
The drop-in classes: ampcore's C cores in front of Twisted's own classes.

Each class subclasses the stock one, so everything ampcore does not do in C
(TLS, protocol switching, descriptor passing, locators, connection logging,
callRemote's Command coding) is Twisted's own code, and isinstance checks,
zope.interface declarations and the Command.responder metaclass carry over.
"""

from twisted.protocols import amp as _amp

from ampcore import _ampcore


def _stock(name):
    cls = getattr(_amp, name)
    # If install() already ran (e.g. this module is reloaded), keep the
    # stock class, not ours.
    return getattr(cls, "_ampcoreStock", cls)


StockBoxDispatcher = _stock("BoxDispatcher")
StockBinaryBoxProtocol = _stock("BinaryBoxProtocol")
StockAMP = _stock("AMP")


class BoxDispatcher(_ampcore.DispatcherCore, StockBoxDispatcher):
    __doc__ = StockBoxDispatcher.__doc__
    _ampcoreStock = StockBoxDispatcher


class BinaryBoxProtocol(_ampcore.ProtocolCore, StockBinaryBoxProtocol):
    __doc__ = StockBinaryBoxProtocol.__doc__
    _ampcoreStock = StockBinaryBoxProtocol


class AMP(BinaryBoxProtocol, BoxDispatcher, StockAMP):
    __doc__ = StockAMP.__doc__
    _ampcoreStock = StockAMP


for _cls in (BoxDispatcher, BinaryBoxProtocol, AMP):
    _cls.__module__ = "ampcore"
del _cls
