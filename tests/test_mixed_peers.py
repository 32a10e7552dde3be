"""
Stock Twisted AMP and ampcore talking to each other over real TCP.

tests/peer.py runs a server or a client in its own process, on Twisted's
C{amp.AMP} or on C{ampcore.AMP}; both share one set of Commands that covers
every built-in argument type, optional arguments, AmpList, declared,
undeclared and fatal errors, unknown commands, C{requiresAnswer=False},
C{callRemoteString}, calls back from the server and many calls in flight.
The client prints a canonical transcript of every result and failure.  All
four client/server combinations must give the same transcript, and the
ampcore sides must really run ampcore's C extension (each peer says so in
header lines, checked here and left out of the comparison).

The runnable example in examples/ is exercised here too.

Everything runs on 127.0.0.1; every wait is bounded and every process this
module starts is killed when its test ends.
"""

import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

import ampcore
from helpers import needsExtension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(HERE, "peer.py")
EXAMPLES = os.path.join(ROOT, "examples")

START_TIMEOUT = 15.0  # for a server to say where it listens
CLIENT_TIMEOUT = 30.0  # for a client to finish (peer.py gives up at 25 s)

# (client implementation, server implementation)
COMBINATIONS = [
    ("stock", "stock"),
    ("ampcore", "stock"),
    ("stock", "ampcore"),
    ("ampcore", "ampcore"),
]
BASELINE = ("stock", "stock")

def combinationParams(combinations):
    return [
        pytest.param(
            combo,
            id=f"{combo[0]}-client-{combo[1]}-server",
            marks=[needsExtension()] if "ampcore" in combo else [],
        )
        for combo in combinations
    ]


def peerEnvironment():
    env = dict(os.environ)
    # Nothing may patch ampcore into twisted.protocols.amp behind our back
    # (tests/sitecustomize_dir does that when AMPCORE_INSTALL=1).
    env.pop("AMPCORE_INSTALL", None)
    env.pop("AMPCORE_INSTALL_MARKER", None)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Background:
    """
    A process running in the background whose output is collected by
    threads, so that reading it can time out and the pipes never fill.
    """

    def __init__(self, argv):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=peerEnvironment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.stdoutLines = queue.Queue()
        self.stdout = []
        self.stderr = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, True)),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, False)),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    def _pump(self, stream, lines, toQueue):
        for line in stream:
            lines.append(line)
            if toQueue:
                self.stdoutLines.put(line.rstrip("\n"))
        if toQueue:
            self.stdoutLines.put(None)

    def waitForLine(self, pattern, timeout=START_TIMEOUT):
        """
        Return the match of C{pattern} against the first stdout line that
        matches it, and the lines before it.
        """
        deadline = time.monotonic() + timeout
        before = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s from "
                    f"{self.argv}\n{self.describe()}"
                )
            try:
                line = self.stdoutLines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"{self.argv} ended before printing {pattern!r}\n{self.describe()}"
                )
            match = re.fullmatch(pattern, line)
            if match:
                return match, before
            before.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            for t in self._threads:
                t.join(timeout=5)
            self.proc.stdout.close()
            self.proc.stderr.close()

    def describe(self):
        return (
            f"returncode: {self.proc.poll()}\n"
            f"stdout:\n{''.join(self.stdout)[-3000:]}\n"
            f"stderr:\n{''.join(self.stderr)[-3000:]}"
        )


class Run:
    """One client/server combination, run to completion."""

    def __init__(self, client, server):
        self.client = client
        self.server = server
        self.serverHeader = []
        self.result = None
        self.serverOutput = ""
        self.serverSurvived = None

    @property
    def lines(self):
        return self.result.stdout.splitlines()

    @property
    def header(self):
        return [line for line in self.lines if line.startswith("#")]

    @property
    def transcript(self):
        return [line for line in self.lines if not line.startswith("#")]

    def describe(self):
        return (
            f"client {self.client} / server {self.server}: "
            f"client returncode {self.result.returncode}\n"
            f"client stdout (end):\n{self.result.stdout[-3000:]}\n"
            f"client stderr (end):\n{self.result.stderr[-3000:]}\n"
            f"server:\n{self.serverOutput}"
        )


def runCombination(client, server):
    run = Run(client, server)
    serverProc = Background(
        [sys.executable, PEER, "server", "--impl", server, "--lifetime", "60"]
    )
    try:
        match, run.serverHeader = serverProc.waitForLine(r"PORT (\d+)")
        port = match.group(1)
        run.result = subprocess.run(
            [sys.executable, PEER, "client", "--impl", client, "--port", port],
            cwd=ROOT,
            env=peerEnvironment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=CLIENT_TIMEOUT,
        )
    finally:
        run.serverSurvived = serverProc.proc.poll() is None
        serverProc.stop()
        run.serverOutput = serverProc.describe()
    return run


@pytest.fixture(scope="module")
def runs():
    """Each combination is run once, when a test first asks for it."""
    done = {}

    def get(combo):
        if combo not in done:
            done[combo] = runCombination(*combo)
        return done[combo]

    return get


def facts(impl):
    isAmpcore = impl == "ampcore"
    return f"impl={impl} c_extension={isAmpcore} ampcore_subclass={isAmpcore}"


@pytest.mark.parametrize("combo", combinationParams(COMBINATIONS))
def test_each_side_runs_the_implementation_asked_for(runs, combo):
    run = runs(combo)
    client, server = combo
    assert run.result.returncode == 0, run.describe()
    assert run.serverHeader == [f"#server {facts(server)}"], run.describe()
    assert run.header == [
        f"#client {facts(client)}",
        f"#server-seen-by-client {facts(server)}",
        "#done",
    ], run.describe()
    assert run.lines[-1] == "#done", run.describe()
    assert run.serverSurvived, "the server exited early\n" + run.describe()


def splitTranscript(lines):
    """label -> payload, in order; labels are unique."""
    labelled = [line.split("\t", 1) for line in lines]
    labels = [label for label, _ in labelled]
    assert len(labels) == len(set(labels)), "duplicate labels in the transcript"
    return dict(labelled)


def describeDifferences(expected, actual, expectedName, actualName, limit=8):
    exp = splitTranscript(expected)
    act = splitTranscript(actual)
    report = []
    for label in list(exp) + [k for k in act if k not in exp]:
        if exp.get(label) != act.get(label):
            report.append(
                f"--- {label}\n"
                f"  {expectedName}: {str(exp.get(label, '<missing>'))[:1500]}\n"
                f"  {actualName}: {str(act.get(label, '<missing>'))[:1500]}"
            )
    if list(exp) != list(act):
        report.append("(the order of the calls differs)")
    shown = report[:limit]
    if len(report) > limit:
        shown.append(f"... and {len(report) - limit} more differences")
    return "\n".join(shown)


@pytest.mark.parametrize(
    "combo", combinationParams([c for c in COMBINATIONS if c != BASELINE])
)
def test_transcript_is_the_same_as_stock_with_stock(runs, combo):
    baseline = runs(BASELINE)
    run = runs(combo)
    assert baseline.result.returncode == 0, baseline.describe()
    assert run.result.returncode == 0, run.describe()
    name = f"{combo[0]} client/{combo[1]} server"
    assert run.transcript == baseline.transcript, (
        f"{name} differs from stock client/stock server:\n"
        + describeDifferences(baseline.transcript, run.transcript, "stock/stock", name)
    )


def test_stock_transcript_covers_the_interesting_cases(runs):
    """
    The comparison is only as good as the transcript: check on the stock
    with stock run that every case ran and came out as Twisted documents.
    """
    run = runs(BASELINE)
    assert run.result.returncode == 0, run.describe()
    got = splitTranscript(run.transcript)
    assert len([k for k in got if k.startswith("EchoAll/")]) == 43
    expectations = {
        "Divide/ok": '"quotient", {"float": "3.5"}',
        "Divide/zero": '"error": "builtins.ZeroDivisionError"',
        "Divide/bad": '"error": "__main__.BadInput"',
        "Notify/1": '{"returned": null}',
        "GetNotes": '"raw"',
        "raw/Sum": '["b\'total\'", {"bytes": "b\'7\'"}]',
        "unknown/callRemote": '"error": "twisted.protocols.amp.UnhandledCommand"',
        "unknown/callRemoteString": '"error": "twisted.protocols.amp.UnhandledCommand"',
        "local/value-too-long": '"error": "twisted.protocols.amp.TooLong"',
        "local/key-too-long": '"isKey": true',
        "CallMeBack": "pong:cb",
        "pipelined/300": '{"ok": [',
        "Explode": '"error": "twisted.protocols.amp.UnknownRemoteError"',
        "Explode/connection": "twisted.internet.error.ConnectionDone",
        "FatalExplode": '"error": "helpers.Fatal"',
        "FatalExplode/connection": "twisted.internet.error.ConnectionDone",
        "BadReturn": '"error": "twisted.protocols.amp.UnknownRemoteError"',
        "unknown/callRemoteString-noanswer/connection": '"connection": "lost"',
        "raw/missing-argument": '"errorCode": "b\'UNKNOWN\'"',
        "raw/Sum-with-longest-key-and-value": '["b\'total\'", {"bytes": "b\'11\'"}]',
        "unknown/non-ascii-name/connection": '"connection": "lost"',
        "raw/empty-box/connection": '"connection": "lost"',
        "raw/key-too-long/connection": '"connection": "lost"',
        "trickle/GetNotes": "trickled",
        "ServerLog/events": "__main__.NotDeclared",
        "ServerLog/connections": '"stopReceivingBoxes": "twisted.protocols.amp.TooLong"',
    }
    for label, fragment in expectations.items():
        assert label in got, f"{label} is missing from the transcript"
        assert fragment in got[label], (label, got[label][:2000])
    for label in ("EchoAll/16/real", "EchoAll/06/blob", "EchoAll/29/dec"):
        assert got[label].startswith('{"ok"'), (label, got[label][:500])
    assert '{"float": "nan"}' in got["EchoAll/16/real"]
    assert '"bytes_len": 65535' in got["EchoAll/06/blob"]
    assert '{"decimal": "sNaN"}' in got["EchoAll/29/dec"]


# ---- the example --------------------------------------------------------------

EXPECTED_EXAMPLE_OUTPUT = [
    "13 + 81 = 94",
    "doubles: [0, 2, 4, 6, 8]",
    "10 / 4 = 2.5",
    "1 / 0 failed on the server: ZeroDivisionError: division by zero",
]


def test_example_server_and_client():
    server = Background([sys.executable, os.path.join(EXAMPLES, "server.py"), "0"])
    try:
        match, _ = server.waitForLine(r"Serving on 127\.0\.0\.1:(\d+)")
        extension, _ = server.waitForLine(r"ampcore C extension in use: (True|False)")
        assert extension.group(1) == str(ampcore.HAS_C_EXTENSION)
        result = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "client.py"), match.group(1)],
            cwd=ROOT,
            env=peerEnvironment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        )
    finally:
        server.stop()
    assert result.returncode == 0, (result.stdout, result.stderr, server.describe())
    assert result.stdout.splitlines() == EXPECTED_EXAMPLE_OUTPUT, (
        result.stdout,
        result.stderr,
    )
