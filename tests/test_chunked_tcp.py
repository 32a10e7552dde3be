"""
ampcore.arguments over real TCP, for every pairing of stock Twisted and
ampcore: tests/chunked_peer.py runs each side in its own process (the stock
side without ampcore's C extension, as a stock peer would run it), and the
client's transcript must say, for all four pairings, the same thing: every
value came back exactly as sent, and every mismatch failed loudly.

Everything runs on 127.0.0.1; every wait is bounded and every process this
module starts is killed when its test ends.
"""

import os
import subprocess
import sys

import pytest

import ampcore
from chunkedcommands import SIZES, M
from test_mixed_peers import Background, peerEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "chunked_peer.py")
CLIENT_TIMEOUT = 110.0

IMPLS = ("stock", "ampcore")
PAIRINGS = [(c, s) for c in IMPLS for s in IMPLS]

# What every pairing must print (the transcript, in order).
EXPECTED = []
for n in SIZES:
    if n <= M:
        EXPECTED += [f"Echo/{n}\tok, as sent", f"Give/{n}\tok, as sent"]
    else:
        # Over maxLength: the caller's own TooLong, before sending; the
        # responder's, reported to the caller as an unknown error.
        EXPECTED += [
            f"Echo/{n}\traised TooLong",
            f"Give/{n}\tfailed twisted.protocols.amp.UnknownRemoteError",
        ]
EXPECTED += [
    "EchoLoose-to-strict/M+1\tfailed twisted.protocols.amp.UnknownRemoteError",
    "Give-from-loose/M+1\tfailed ampcore.arguments.MalformedChunks",
    "GiveLoose-from-loose/M+1\tok, as sent",
    "EchoText\tok, as sent",
    "EchoList\tok, as sent",
    "EchoRows\tok, as sent",
    "EchoRows/no-extra\tok, as sent",
    "mismatch/EchoPlain-small-to-strict\tok, as sent",
    "mismatch/Echo-small-to-plain\tok, as sent",
    "mismatch/Echo-big-to-plain\tfailed twisted.protocols.amp.UnknownRemoteError",
    "mismatch/GivePlain-from-strict\tfailed builtins.KeyError",
    "mismatch/Give-from-plain\tfailed twisted.internet.error.ConnectionDone",
    "mismatch/EchoPlain-big\traised TooLong",
]


def header(role, impl):
    core = impl == "ampcore" and ampcore.HAS_C_EXTENSION
    module = "ampcore" if core else "twisted.protocols.amp"
    return f"#{role} impl={impl} c_extension={core} c_join={core} amp_module={module}"


def run(client, server):
    serverProc = Background([sys.executable, PEER, "server", "--impl", server])
    try:
        match, before = serverProc.waitForLine(r"PORTS (\d+,\d+,\d+)")
        result = subprocess.run(
            [sys.executable, PEER, "client", "--impl", client, "--ports", match.group(1)],
            cwd=HERE,
            env=peerEnvironment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=CLIENT_TIMEOUT,
        )
    finally:
        serverProc.stop()
    return before, result, serverProc.describe()


@pytest.mark.parametrize(
    "client, server", PAIRINGS, ids=[f"{c}-client-{s}-server" for c, s in PAIRINGS]
)
def test_chunked_values_over_tcp(client, server):
    serverHeader, result, serverOutput = run(client, server)
    context = f"client stderr:\n{result.stderr[-3000:]}\nserver:\n{serverOutput}"
    assert result.returncode == 0, result.stdout[-3000:] + context
    lines = result.stdout.splitlines()
    assert serverHeader == [header("server", server)], context
    assert lines[0] == header("client", client), context
    assert lines[-1] == "#done", context
    assert lines[1:-1] == EXPECTED, context
