"""
Installs ampcore into twisted.protocols.amp at interpreter start-up when
AMPCORE_INSTALL=1, so that trial -j workers, which are fresh processes, run
on ampcore too (used by tests/test_twisted_suite.py).  Records in the
environment-named file that it ran, so the test can tell.
"""

import os

if os.environ.get("AMPCORE_INSTALL") == "1":
    import ampcore

    if not ampcore.install():
        raise SystemExit("ampcore: C extension not in use")
    marker = os.environ.get("AMPCORE_INSTALL_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
