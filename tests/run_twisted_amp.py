"""
Run Twisted's own AMP test suite (twisted.test.test_amp, shipped inside the
Twisted package) with ampcore installed into twisted.protocols.amp.

    python tests/run_twisted_amp.py [trial arguments...]

install() runs before trial or the test module is imported, so every AMP
class they define (trial's own worker protocols included) stands on
ampcore's classes.  Exits with trial's status.
"""

import sys

import ampcore

if not ampcore.install():
    sys.exit("ampcore: the C extension is not in use; nothing to test")

from twisted.protocols import amp  # noqa: E402
from twisted.scripts.trial import run  # noqa: E402
from twisted.test import test_amp  # noqa: E402

# The suite must really run on ampcore: its protocols must stand on our AMP.
assert amp.AMP is ampcore.AMP
assert issubclass(test_amp.SimpleSymmetricProtocol, ampcore.AMP)

sys.argv = ["trial", *(sys.argv[1:] or ["twisted.test.test_amp"])]
run()
