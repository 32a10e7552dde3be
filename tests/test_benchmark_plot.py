"""
benchmarks/run.py --plot PATH and benchmarks/plot.py: the speed-up chart,
drawn from a small made-up result set (no measuring), as a real PNG with the
run's numbers in it.  matplotlib is the ``plot`` extra; without it the
drawing tests skip, and the clear error they would meet is tested instead.
"""

import json
import os
import subprocess
import sys

import pytest

_BENCHMARKS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"
)
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)

import plot  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fakeDocument(withPyPy=True):
    cases = [
        {"case": "parse-4k", "title": "1000 boxes", "speedup": 50.0, "speedup_vs_pypy": 16.0},
        {"case": "parse-1b", "title": "bytewise", "speedup": 9.5, "speedup_vs_pypy": 0.4},
        {"case": "tcp-15", "title": "TCP", "speedup": 3.3},  # PyPy failed on this one
    ]
    if not withPyPy:
        for row in cases:
            row.pop("speedup_vs_pypy", None)
    return {
        "python": "3.11.7",
        "twisted": "26.10.0",
        "c_extension": True,
        "pypy": {"python": "3.9.18", "twisted": "26.4.0"} if withPyPy else None,
        "settings": {"quick": True},
        "cases": cases,
    }


def checkPNG(path):
    """A PNG with something drawn on it (not one flat colour)."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 400 and height >= 150
    assert pixels.std() > 0.05


def test_series():
    labels, cpython, pypy = plot.series(fakeDocument())
    assert labels == ["parse-4k: 1000 boxes", "parse-1b: bytewise", "tcp-15: TCP"]
    assert cpython == [50.0, 9.5, 3.3]
    assert pypy == [16.0, 0.4, None]


def test_subtitle():
    assert plot.subtitle(fakeDocument()) == (
        "CPython 3.11.7, Twisted 26.10.0; PyPy 3.9.18, Twisted 26.4.0; --quick run"
    )
    document = fakeDocument(withPyPy=False)
    document["c_extension"] = False
    document["settings"]["quick"] = False
    assert plot.subtitle(document) == (
        "CPython 3.11.7, Twisted 26.10.0; C EXTENSION NOT IN USE"
    )


@pytest.mark.parametrize("withPyPy", [True, False])
def test_plot_document(tmp_path, withPyPy):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    plot.plot(fakeDocument(withPyPy), str(path))
    checkPNG(path)


def test_plot_command_line(tmp_path):
    """python benchmarks/plot.py RESULTS.json PNG, from run.py --json's file."""
    pytest.importorskip("matplotlib")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(fakeDocument()))
    png = tmp_path / "chart.png"
    done = subprocess.run(
        [sys.executable, os.path.join(_BENCHMARKS, "plot.py"), str(results), str(png)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Chart written to {png}\n"
    checkPNG(png)


# run.py with its measuring replaced: timeCase gives each side fixed values
# (stock 3 s a run, ampcore 1.5 s: 2x), runWorkloads a PyPy that takes 0.75 s.
LIVE_RUN = """
import sys
sys.path.insert(0, {benchmarks!r})
import run

def timeCase(runner, args, case):
    return {{"stock": [3.0, 3.0, 3.0], "ampcore": [1.5, 1.5, 1.5]}}

def runWorkloads(python, arguments):
    if arguments == ["--info"]:
        return {{"implementation": "PyPy", "python": "3.9.18", "twisted": "26.4.0"}}
    return {{"seconds": [0.75, 0.75]}}

run.timeCase = timeCase
run.runWorkloads = runWorkloads
sys.argv = ["run.py", "--quick", "--case", "parse-4k", "--case", "serialize",
            "--pypy", "fake-pypy"] + sys.argv[1:]
run.main()
"""


def runLive(tmp_path, *args, blockMatplotlib=False):
    code = LIVE_RUN.format(benchmarks=_BENCHMARKS)
    if blockMatplotlib:
        code = "import sys; sys.modules['matplotlib'] = None\n" + code
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def test_run_plot_live(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyperf")
    png, results = tmp_path / "chart.png", tmp_path / "results.json"
    done = runLive(tmp_path, "--plot", str(png), "--json", str(results))
    assert done.returncode == 0, done.stderr
    assert f"Chart written to {png}" in done.stdout.splitlines()
    checkPNG(png)
    document = json.loads(results.read_text())
    labels, cpython, pypy = plot.series(document)
    assert [label.split(":")[0] for label in labels] == ["parse-4k", "serialize"]
    assert cpython == [2.0, 2.0]
    assert pypy == [0.5, 0.5]


def test_missing_matplotlib_run(tmp_path):
    """Without matplotlib, run.py --plot stops before measuring, saying
    what to install."""
    pytest.importorskip("pyperf")
    done = runLive(tmp_path, "--plot", str(tmp_path / "chart.png"), blockMatplotlib=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == plot.MISSING
    assert "Stock Twisted AMP against ampcore" not in done.stdout
    assert not (tmp_path / "chart.png").exists()


def test_missing_matplotlib_plot_command(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(fakeDocument()))
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        f"sys.path.insert(0, {_BENCHMARKS!r}); import plot; "
        f"plot.main([{str(results)!r}, {str(tmp_path / 'chart.png')!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip() == plot.MISSING
