"""
The speed-up chart: ampcore's speed-up per case, against stock Twisted on
the same CPython and, where the run has it, against stock Twisted on PyPy.

    python benchmarks/run.py --plot chart.png          # from a live run
    python benchmarks/plot.py results.json chart.png   # from run.py --json

matplotlib (the ``plot`` extra: pip install '.[plot]') draws it; it is
imported only here, only when a chart is asked for, and is not a dependency
of ampcore.
"""

import argparse
import json
import sys
import textwrap

MISSING = "--plot needs matplotlib: pip install '.[plot]' (or pip install matplotlib)"


def requireMatplotlib():
    """Exit with a clear message, before any measuring, when matplotlib is
    not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit(MISSING)


def series(document):
    """(labels, speed-ups against stock CPython, speed-ups against PyPy or
    None per case) from a results document as run.py --json writes it."""
    labels, cpython, pypy = [], [], []
    for row in document["cases"]:
        labels.append("%s: %s" % (row["case"], row["title"]))
        cpython.append(row["speedup"])
        pypy.append(row.get("speedup_vs_pypy"))
    return labels, cpython, pypy


def subtitle(document):
    text = "CPython %s, Twisted %s" % (document["python"], document["twisted"])
    if document.get("pypy"):
        text += "; PyPy %(python)s, Twisted %(twisted)s" % document["pypy"]
    if document.get("settings", {}).get("quick"):
        text += "; --quick run"
    if not document.get("c_extension", True):
        text += "; C EXTENSION NOT IN USE"
    return text


def plot(document, path):
    """Draw C{document}'s speed-ups as a horizontal bar chart into the PNG
    C{path}; one pair of bars per case, on a log scale with 1x (as fast as
    the reference) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    labels, cpython, pypy = series(document)
    labels = [textwrap.fill(label, 48) for label in labels]
    withPyPy = any(v is not None for v in pypy)
    n = len(labels)
    height = 0.38 if withPyPy else 0.6
    figure, axes = plt.subplots(figsize=(9, 0.62 * n + 1.4), dpi=72)
    rows = list(range(n))
    offset = height / 2 if withPyPy else 0
    bars = [("ampcore vs stock Twisted, same CPython", cpython, "#2a6fb0", -offset)]
    if withPyPy:
        bars.append(("ampcore vs stock Twisted on PyPy", pypy, "#e08a2c", offset))
    for label, values, colour, shift in bars:
        ys = [y + shift for y, v in zip(rows, values) if v is not None]
        xs = [v for v in values if v is not None]
        axes.barh(ys, xs, height=height, color=colour, label=label)
        for x, y in zip(xs, ys):
            axes.annotate(
                "%.1f×" % x, (x, y), xytext=(3, 0), textcoords="offset points",
                va="center", fontsize=8,
            )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g×" % v))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(rows)
    axes.set_yticklabels(labels, fontsize=8)
    axes.invert_yaxis()
    every = [v for v in cpython + pypy if v is not None]
    axes.set_xlim(min(0.5, min(every) / 1.5), max(every) * 2.2)
    axes.set_xlabel("speed-up: reference time / ampcore time (log scale; below 1×, slower)")
    axes.set_title(
        "ampcore speed-ups\n%s" % textwrap.fill(subtitle(document), 90), fontsize=10, pad=26
    )
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    axes.grid(axis="x", which="both", alpha=0.3)
    figure.savefig(path, format="png", bbox_inches="tight")
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Draw the speed-ups of a run.py --json results file as a PNG."
    )
    parser.add_argument("results", help="the JSON file run.py --json wrote")
    parser.add_argument("png", help="where to write the chart")
    args = parser.parse_args(argv)
    requireMatplotlib()
    with open(args.results) as f:
        document = json.load(f)
    plot(document, args.png)
    print("Chart written to", args.png)


if __name__ == "__main__":
    main()
