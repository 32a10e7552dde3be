"""
The benchmark workloads (benchmarks/workloads.py) do the same work on stock
Twisted AMP and on ampcore: each case's C{run()} gives the same results on
both sides, and the results that its inputs call for, worked out here
without AMP.  So benchmarks/run.py, which checks nothing itself, times equal
work.  Self-contained: it needs only the benchmarks folder.
"""

import os
import sys
import zlib

import pytest
from twisted.protocols import amp

_BENCHMARKS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"
)
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)

import workloads  # noqa: E402
from workloads import BATCH, CASES, CASES_BY_NAME, SIDES  # noqa: E402


def _sums(run):
    return [{"total": a["a"] + a["b"], "label": a["label"]} for a in workloads.SUM_ARGS]


def _orders(run):
    answers = []
    for a in workloads.ORDER_ARGS:
        lines = a["lines"]
        answers.append(
            {
                "order": a["order"],
                "customer": a["customer"],
                "express": a["express"],
                "quantity": sum(line["quantity"] for line in lines),
                "total": sum(line["quantity"] * line["price"] for line in lines)
                * (1.0 - a["discount"]),
                "tags": list(reversed(a["tags"])),
            }
        )
    return answers


def _echoes(run):
    # The answer boxes: tags count up from 1 on a fresh connection, in hex.
    return [
        amp.AmpBox({b"_answer": b"%x" % (run * BATCH + i + 1), b"value": value})
        for i, value in enumerate(a["value"] for a in workloads.ECHO_ARGS)
    ]


def _measures(run):
    return [
        {
            "count": a["count"],
            "crc": zlib.crc32(a["payload"]),
            "total": sum(a["samples"]),
        }
        for a in workloads.MEASURE_ARGS
    ]


def _boxes(count):
    return lambda run: workloads.recordBoxes()[:count]


EXPECTED = {
    "parse-4k": _boxes(workloads.STREAM_BOXES),
    "parse-1b": _boxes(workloads.BYTEWISE_BOXES),
    "parse-oneshot": _boxes(workloads.STREAM_BOXES),
    "big-4k": lambda run: [workloads.bigBox()],
    "big-1b": lambda run: [workloads.bigBox()],
    "serialize": lambda run: [workloads.encodeBox(box) for box in workloads.putBoxes()],
    "call-seq": _sums,
    "call-pipe": _sums,
    "mixed-seq": _orders,
    "mixed-pipe": _orders,
    "string-seq": _echoes,
    "string-pipe": _echoes,
    "tcp-15": _measures,
    "tcp-100": _measures,
    "chunked-up-1m": lambda run: [workloads.bigValue(workloads.MIB)],
    "chunked-down-1m": lambda run: [workloads.bigValue(workloads.MIB)],
    "chunked-up-16m": lambda run: [workloads.bigValue(16 * workloads.MIB)],
    "chunked-down-16m": lambda run: [workloads.bigValue(16 * workloads.MIB)],
}
"""Case name -> C{f(n)}: the results of the C{n}th run() (from 0) of a fresh
workload, from the inputs alone."""


def assertSameItems(got, want):
    """Equal lists of equal items of the same types (dict values too:
    True is not 1, 1.0 is not 1)."""
    assert isinstance(got, list)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert type(g) is type(w), (i, type(g), type(w))
        assert g == w, (i, g, w)
        if isinstance(w, dict):
            for key in w:
                assert type(g[key]) is type(w[key]), (i, key, g[key], w[key])


def test_every_case_is_checked():
    assert sorted(EXPECTED) == sorted(CASES_BY_NAME)


def test_sides():
    """Each side runs on its own implementation's names."""
    import ampcore

    stock, core = workloads.Side("stock"), workloads.Side("ampcore")
    assert (stock.AMP, stock.parse) == (amp.AMP, amp.parseString)
    assert stock.serialize is amp.AmpBox.serialize
    assert (core.AMP, core.parse) == (ampcore.AMP, ampcore.parse)
    assert core.serialize is ampcore.serialize


def test_cases_asked_for():
    """The cases the benchmark must keep."""
    names = set(CASES_BY_NAME)
    assert {"parse-1b", "big-1b", "parse-oneshot", "serialize"} <= names
    assert {"call-seq", "call-pipe", "string-seq", "string-pipe"} <= names
    assert {"mixed-seq", "mixed-pipe", "tcp-15", "tcp-100"} <= names
    order = dict(workloads.Order.arguments)
    kinds = {type(argument) for argument in order.values()}
    assert {amp.Integer, amp.String, amp.Unicode, amp.Boolean, amp.Float} <= kinds
    assert {amp.ListOf, amp.AmpList} <= kinds
    for case in CASES:
        if case.unit == "call":
            assert case.items == BATCH


@pytest.mark.parametrize("name", sorted(CASES_BY_NAME))
def test_same_results_on_both_sides(name):
    case = CASES_BY_NAME[name]
    results = {}
    for side in SIDES:
        work = case.setup(side)
        try:
            # Twice: timing runs a workload many times on the same objects.
            results[side] = [work.run(), work.run()]
        finally:
            work.close()
        for run, got in enumerate(results[side]):
            assertSameItems(got, EXPECTED[name](run))
    assertSameItems(results["ampcore"][0], results["stock"][0])


def test_serialized_sizes():
    assert all(
        len(workloads.encodeBox(box)) == workloads.BOX_SIZE
        for box in workloads.recordBoxes()
    )
    assert all(
        len(workloads.encodeBox(box)) == workloads.SERIALIZE_SIZE
        for box in workloads.putBoxes()
    )
    assert len(workloads.bigBox()[b"data"]) == workloads.BIG_VALUE


@pytest.mark.parametrize("side", SIDES)
def test_time(side):
    """time(loops) runs the workload and returns its seconds."""
    work = CASES_BY_NAME["call-pipe"].setup(side)
    assert work.time(3) > 0
    assert len(work.run()) == BATCH


@pytest.mark.parametrize("side", SIDES)
def test_tcp_leaves_the_reactor_clean(side):
    from twisted.internet import reactor

    delayed = set(reactor.getDelayedCalls())
    readers, writers = set(reactor.getReaders()), set(reactor.getWriters())
    work = CASES_BY_NAME["tcp-15"].setup(side)
    assert work.time(2) > 0
    work.close()
    assert set(reactor.getDelayedCalls()) <= delayed
    assert set(reactor.getReaders()) <= readers
    assert set(reactor.getWriters()) <= writers


def test_measure_loop():
    """The simple timing loop run.py uses under PyPy."""
    values, loops = workloads.measure(
        CASES_BY_NAME["serialize"], "stock", warmup=0.01, values=2, minTime=0.001
    )
    assert len(values) == 2 and all(v > 0 for v in values) and loops >= 1


class Unknown(amp.Command):
    arguments = [(b"a", amp.Integer())]


@pytest.mark.parametrize("side", SIDES)
def test_a_failed_call_is_an_error(side):
    """A workload raises, rather than times, calls that fail."""
    work = workloads.calls("callRemote", Unknown, [dict(a=1)], True)(
        workloads.Side(side)
    )
    with pytest.raises(AssertionError, match="0 of 1 calls answered, 1 failed"):
        work.run()


def test_chunked_cases():
    """
    The big-value cases: ampcore.arguments.BigBytes on the ampcore side,
    the BigString recipe (what stock users write; ListOf(String()) is
    limited to 65,535 bytes in all) on the stock side, whose layout BigBytes
    accepts, so the two sides move the same bytes in the same keys but one.
    """
    from ampcore.arguments import BigBytes

    mib = workloads.MIB
    sizes = {
        "chunked-up-1m": mib,
        "chunked-down-1m": mib,
        "chunked-up-16m": 16 * mib,
        "chunked-down-16m": 16 * mib,
    }
    assert {name: CASES_BY_NAME[name].size for name in sizes} == sizes
    value = workloads.bigValue(16 * mib)
    assert len(value) == 16 * mib and len(set(value[i : i + 4096] for i in range(0, mib, 4096))) > 1
    for side, kind in (("stock", workloads.StockBigString), ("ampcore", BigBytes)):
        upload, download = workloads.bigCommands(side)
        assert type(dict(upload.arguments)[b"data"]) is kind
        assert type(dict(download.response)[b"data"]) is kind
    box = amp.AmpBox()
    workloads.StockBigString().toBox(b"data", box, {"data": value[: 3 * 65535 + 1]}, None)
    assert sorted(box) == [b"data", b"data.2", b"data.3", b"data.4"]
    objects = {}
    BigBytes().fromBox(b"data", amp.AmpBox.copy(box), objects, None)
    assert objects == {"data": value[: 3 * 65535 + 1]}
    objects = {}
    workloads.StockBigString().fromBox(b"data", amp.AmpBox.copy(box), objects, None)
    assert objects == {"data": value[: 3 * 65535 + 1]}
