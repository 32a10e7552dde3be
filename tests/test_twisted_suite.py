"""
Twisted's own AMP test suite, run on ampcore's classes.

tests/run_twisted_amp.py installs ampcore into twisted.protocols.amp before
trial and twisted.test.test_amp are imported, then runs the suite; here it
runs in a fresh interpreter and every test must pass: none skipped (the test
extra brings the TLS dependencies), none failed.
"""

import os
import re
import subprocess
import sys

from helpers import needsExtension

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = needsExtension()


def runTrial(*args, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "run_twisted_amp.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_twisted_test_amp_passes_with_ampcore_installed():
    result = runTrial()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    ran = re.search(r"^Ran (\d+) tests", output, re.MULTILINE)
    summary = re.search(r"^PASSED \((.*)\)$", output, re.MULTILINE)
    assert ran and summary, output[-5000:]
    # Only successes: a skip or an expected failure would hide a test.
    assert summary.group(1) == f"successes={ran.group(1)}", summary.group(0)
    assert int(ran.group(1)) >= 130


def test_twisted_test_amp_in_distributed_trial_workers(tmp_path):
    """
    trial -j2: the manager and its worker processes talk AMP to each other,
    so with ampcore installed in every process (by a sitecustomize that
    calls ampcore.install() at interpreter start-up) that channel runs on
    ampcore too.
    """
    site = os.path.join(HERE, "sitecustomize_dir")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (site, env.get("PYTHONPATH")) if p
    )
    env["AMPCORE_INSTALL"] = "1"
    marker = tmp_path / "installed-pids"
    env["AMPCORE_INSTALL_MARKER"] = str(marker)
    result = subprocess.run(
        # Not `-m twisted.trial`: Twisted 22.8's __main__ goes through
        # pkg_resources entry points, which fail to resolve in a venv.
        [
            sys.executable,
            "-c",
            "from twisted.scripts.trial import run; run()",
            "-j2",
            "twisted.test.test_amp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    # The manager and both workers installed ampcore.
    assert len(set(marker.read_text().split())) >= 3
    summary = re.search(r"^PASSED \((.*)\)$", output, re.MULTILINE)
    ran = re.search(r"^Ran (\d+) tests", output, re.MULTILINE)
    assert ran and summary, output[-5000:]
    assert summary.group(1) == f"successes={ran.group(1)}", summary.group(0)
