"""
Shared pytest configuration for the ampcore differential suite.

The helpers the test modules share live in C{_oracle.py} next to this file;
this directory is put on C{sys.path} so they import it whatever pytest's
import mode is.  Only this directory is added: the repository root (which
holds the ampcore I{source} package, without its compiled extension) is
deliberately not, so the tests exercise the installed ampcore.
"""

import os
import sys

from hypothesis import HealthCheck, settings

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import ampcore  # noqa: E402

settings.register_profile(
    "ampcore",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("AMPCORE_HYPOTHESIS_PROFILE", "ampcore"))


def pytest_report_header(config):
    impl = "C extension" if ampcore.HAS_C_EXTENSION else "stock-backed fallback"
    return [
        f"ampcore: {impl} ({ampcore.__file__}); "
        f"AMPCORE_PUREPYTHON={os.environ.get('AMPCORE_PUREPYTHON', '')!r}"
    ]
