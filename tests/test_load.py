"""
A bounded load test over 127.0.0.1: an ampcore server, and 20 connections
from one client process, alternately stock Twisted's AMP and ampcore's,
each making 100 warm-up calls and then 500 more with 15 in flight
(callRemote of a Command, some answered out of order from a Deferred, and
callRemoteString).  Every answer is checked; none may be wrong, lost or
duplicated.  The server's resident size after the 500 must be within
L{RSS_SLACK} of what it was after the warm-up (a leak of even a hundred
bytes a call would pass it); under AddressSanitizer, whose allocator grows
the resident size by design, only the answers are judged.  The two sides
are tests/load_peer.py.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import needsExtension

pytestmark = needsExtension()

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "load_peer.py")
CONNECTIONS, CALLS, IN_FLIGHT, WARMUP = 20, 500, 15, 100
RSS_SLACK = 1024 * 1024
TIMEOUT = 120
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.fixture
def server():
    proc = subprocess.Popen(
        [sys.executable, PEER, "server"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            proc.kill()
            raise AssertionError("server did not start: %r %s" % (line, proc.stderr.read()))
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_many_connections_many_calls_in_flight(server):
    child = subprocess.run(
        [sys.executable, PEER, "client", "--port", str(server),
         "--connections", str(CONNECTIONS), "--calls", str(CALLS),
         "--in-flight", str(IN_FLIGHT), "--warmup", str(WARMUP)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"]
    expected = CONNECTIONS * (WARMUP + CALLS)
    assert result["expected"] == expected
    assert result["answers"] == expected
    assert result["clients"] == ["ampcore", "twisted.protocols.amp"]
    if UNDER_ASAN:
        pytest.skip("every answer checked; the server's RSS is not judged under "
                    "AddressSanitizer, whose allocator grows it by design (the plain "
                    "builds judge it)")
    growth = result["rssAfter"] - result["rssBefore"]
    assert growth < RSS_SLACK, (result["rssBefore"], result["rssAfter"])
