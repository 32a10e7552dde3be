"""
Benchmark stock Twisted AMP against ampcore, in the same run.

From the repository root, with ampcore installed (pip install '.[bench]')::

    python benchmarks/run.py                  # default run, a few minutes
    python benchmarks/run.py --quick          # smoke run, about a minute
    python benchmarks/run.py --json out.json  # also write the results as JSON
    python benchmarks/run.py --case tcp       # cases whose name contains "tcp"
    python benchmarks/run.py --list           # list the cases
    python benchmarks/run.py --pypy PYTHON    # add a PyPy column (see below)
    python benchmarks/run.py --plot out.png   # also draw the speed-ups (plot.py)

pyperf does the timing (calibration, worker processes, warm-up, values) of
the cases of workloads.py.  A case runs in rounds; each round is two pyperf
benchmarks, "NAME stock #R" and "NAME ampcore #R", stock first in odd
rounds and ampcore first in even ones.  pyperf runs all the processes of
one benchmark before the next, so on a shared machine a burst of load could
fall on one side only; alternating rounds spread it over both.  The first
round calibrates each side's loop count; later rounds reuse it.  pyperf's
options work too: -p/--processes (per round), -n/--values, --min-time,
-o FILE (pyperf's JSON), --profile FILE (cProfile), -v (pyperf's output).

The table gives each side's median time per box or call over all values,
and the speed-up median(stock) / median(ampcore).  On a shared machine
absolute times are noise; compare speed-ups.  The workloads check only that
their calls are answered; tests/test_benchmark_workloads.py checks that
both sides give the same results.

PyPy column: with --pypy PYTHON (or AMPCORE_BENCH_PYPY=PYTHON), PYTHON being
an interpreter with Twisted (pypy3 -m venv DIR && DIR/bin/pip install
twisted), the stock side of each case also runs there, one process per case,
timed by workloads.py's simple loop (warm-up for the JIT, then values;
pyperf is not needed there).  The table adds PyPy's median and ampcore's
speed-up over it.

Run by path, this script has benchmarks/, not the repository root, on
sys.path, so the installed ampcore, with its C extension, is imported; the
header says which.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time

try:
    import pyperf
except ImportError:
    sys.exit("benchmarks/run.py needs pyperf: pip install '.[bench]'")
import twisted

import ampcore
import plot
import workloads

# pyperf's processes per round, values per process, seconds per value; rounds
DEFAULT, ROUNDS = dict(processes=1, values=4, min_time=0.1), 4
QUICK, QUICK_ROUNDS = dict(processes=1, values=2, min_time=0.05), 2
# workloads.py's simple loop under --pypy
PYPY = ["--warmup", "2", "--values", "7", "--min-time", "0.1"]
PYPY_QUICK = ["--warmup", "0.5", "--values", "3", "--min-time", "0.05"]

C_EXTENSION = "yes" if ampcore.HAS_C_EXTENSION else "no"
NO_C_WARNING = (
    "WARNING: ampcore's C extension is not in use (%s): its side runs stock "
    "Twisted." % (getattr(ampcore, "FALLBACK_REASON", None),)
)


def forwardArguments(cmd, args):
    """Options a worker needs to list the same benchmarks as the manager."""
    for substring in args.case or ():
        cmd.extend(("--case", substring))
    cmd.extend(("--rounds", str(args.rounds)))


def parseArguments():
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--quick", action="store_true")
    quick = pre.parse_known_args()[0].quick
    runner = pyperf.Runner(
        add_cmdline_args=forwardArguments,
        metadata={"ampcore_c_extension": C_EXTENSION},
        **(QUICK if quick else DEFAULT),
    )
    parser = runner.argparser
    parser.description = "Benchmark stock Twisted AMP against ampcore."
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: fewer, shorter values")
    add("--rounds", type=int, help="default %d, --quick %d" % (ROUNDS, QUICK_ROUNDS))
    add("--json", metavar="PATH", help="write the results as JSON")
    add(
        "--plot",
        metavar="PATH",
        help="draw the speed-ups as a PNG (needs matplotlib: pip install '.[plot]')",
    )
    add("--case", action="append", metavar="SUBSTRING", help="cases to run")
    add("--list", action="store_true", help="list the cases")
    add(
        "--pypy",
        metavar="PYTHON",
        default=os.environ.get("AMPCORE_BENCH_PYPY"),
        help="also time the stock side under PYTHON, a PyPy with Twisted "
        "(default: $AMPCORE_BENCH_PYPY)",
    )
    args = runner.parse_args()
    args.rounds = args.rounds or (QUICK_ROUNDS if quick else ROUNDS)
    # pyperf's workers get a minimal environment; these change what they run.
    args.inherit_environ = (args.inherit_environ or []) + [
        "AMPCORE_PUREPYTHON",
        "PYTHONPATH",
    ]
    return runner, args


def timeFunction(case, side):
    """pyperf's time function: sets the workload up on its first call, in
    the worker process, and times C{loops} runs of it."""
    work = []

    def timeRuns(loops):
        if not work:
            work.append(case.setup(side))
        return work[0].time(loops)

    return timeRuns


def timeCase(runner, args, case):
    """Run C{case}'s rounds; return each side's values (seconds per run) in
    the manager process, None in a worker."""
    values = {side: [] for side in workloads.SIDES}
    loops = {}
    for n in range(args.rounds):
        for side in workloads.SIDES[:: 1 if n % 2 == 0 else -1]:
            name = "%s %s #%d" % (case.name, side, n + 1)
            if args.worker:
                runner.bench_time_func(name, timeFunction(case, side))
                continue
            userLoops, args.loops = args.loops, args.loops or loops.get(side, 0)
            quiet = contextlib.redirect_stdout(io.StringIO())
            with contextlib.nullcontext() if args.verbose else quiet:
                bench = runner.bench_time_func(name, timeFunction(case, side))
            args.loops = userLoops
            loops[side] = bench.get_runs()[-1].get_loops()
            values[side].extend(bench.get_values())
            worker = bench.get_metadata().get("ampcore_c_extension")
            if worker != C_EXTENSION:
                sys.exit("%s: C extension in a worker: %s" % (name, worker))
    return None if args.worker else values


def runWorkloads(python, arguments):
    """Run workloads.py under C{python}; return the JSON it prints."""
    command = [python, os.path.abspath(workloads.__file__)] + arguments
    proc = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "%s exited %d: %s"
            % (" ".join(command), proc.returncode, proc.stderr.strip()[-600:])
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def formatTime(seconds):
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if seconds >= scale:
            break
    return "%.3g %s" % (seconds / scale, unit)


def throughput(case, row):
    """MB/s (10**6 bytes a second) of each side's median, for a case with a
    payload size."""
    return {
        side: case.size / row[side]["median"] / 1e6
        for side in workloads.SIDES
        if side in row
    }


def formatThroughput(mbPerS):
    return "; " + ", ".join("%s %.0f MB/s" % item for item in mbPerS.items())


def table(rows, withPyPy):
    lines = [["case", "stock", "ampcore", "speed-up"]]
    if withPyPy:
        lines[0] += ["PyPy stock", "ampcore vs PyPy"]
    for row in rows:
        case = row["case"]

        def perItem(side):
            return "%s/%s" % (formatTime(row[side]["median"] / case.items), case.unit)

        line = [case.name, perItem("stock"), perItem("ampcore"), "%.1fx" % row["speedup"]]
        if withPyPy and "pypy_stock" in row:
            line += [perItem("pypy_stock"), "%.1fx" % row["speedup_vs_pypy"]]
        elif withPyPy:
            line += ["-", "-"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    lines.insert(1, ["-" * width for width in widths])
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i in (0, 4) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    )


def main():
    runner, args = parseArguments()
    cases = [
        case
        for case in workloads.CASES
        if not args.case or any(s in case.name for s in args.case)
    ]
    if args.list:
        for case in workloads.CASES:
            print("%-13s %s (%d per run)" % (case.name, case.title, case.items))
        return
    if not cases:
        sys.exit("no case matches %s" % (", ".join(args.case),))
    if args.worker:
        for case in cases:
            timeCase(runner, args, case)
        return
    if args.plot:
        plot.requireMatplotlib()  # before minutes of measuring, not after

    started = time.perf_counter()
    print("Stock Twisted AMP against ampcore")
    print("  Python  %s, %s" % (sys.version.split()[0], platform.platform()))
    print("  Twisted %s, pyperf %s" % (twisted.__version__, pyperf.__version__))
    print("  ampcore", os.path.dirname(ampcore.__file__), "C extension:", C_EXTENSION)
    print(
        "  %d rounds x %d processes x %d values of >= %g s per case and side"
        % (args.rounds, args.processes, args.values, args.min_time)
    )
    pypy = None
    if args.pypy:
        try:
            pypy = runWorkloads(args.pypy, ["--info"])
        except (OSError, RuntimeError, ValueError) as e:
            sys.exit("--pypy %s: cannot run workloads.py there: %s" % (args.pypy, e))
        print("  PyPy    %(implementation)s %(python)s, Twisted %(twisted)s" % pypy)
    if not ampcore.HAS_C_EXTENSION:
        print(NO_C_WARNING)
    print(flush=True)

    rows = []
    for case in cases:
        values = timeCase(runner, args, case)
        row = {"case": case}
        for side in workloads.SIDES:
            row[side] = {
                "median": statistics.median(values[side]),
                "values": values[side],
            }
        row["speedup"] = row["stock"]["median"] / row["ampcore"]["median"]
        if case.size:
            row["mb_per_s"] = throughput(case, row)
        rows.append(row)
        print(
            "%-13s stock %s, ampcore %s a run: %.1fx%s"
            % (
                case.name,
                formatTime(row["stock"]["median"]),
                formatTime(row["ampcore"]["median"]),
                row["speedup"],
                formatThroughput(row["mb_per_s"]) if case.size else "",
            ),
            flush=True,
        )
    for row in rows if args.pypy else ():
        print("PyPy:", row["case"].name, flush=True)
        try:
            report = runWorkloads(
                args.pypy, [row["case"].name] + (PYPY_QUICK if args.quick else PYPY)
            )
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print("  failed:", e)
            continue
        median = statistics.median(report["seconds"])
        row["pypy_stock"] = {"median": median, "values": report["seconds"]}
        row["speedup_vs_pypy"] = median / row["ampcore"]["median"]

    print()
    print(table(rows, bool(args.pypy)))
    print(
        "\nMedian time per box or call; speed-up = stock / ampcore%s."
        % ("; ampcore vs PyPy = PyPy stock / ampcore" if args.pypy else "")
    )
    sized = [row for row in rows if row["case"].size]
    if sized:
        print("Throughput of the medians, in MB/s (10**6 bytes a second) of payload:")
        for row in sized:
            print("  %-17s %s" % (row["case"].name, formatThroughput(row["mb_per_s"])[2:]))
    if not ampcore.HAS_C_EXTENSION:
        print(NO_C_WARNING)
    print("Total %.0f s" % (time.perf_counter() - started))

    if args.json or args.plot:
        document = {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "twisted": twisted.__version__,
            "pyperf": pyperf.__version__,
            "ampcore": os.path.dirname(ampcore.__file__),
            "c_extension": ampcore.HAS_C_EXTENSION,
            "pypy": pypy,
            "settings": {
                "quick": args.quick,
                "rounds": args.rounds,
                "processes_per_round": args.processes,
                "values_per_process": args.values,
                "min_time": args.min_time,
            },
            "unit": "seconds per run of a case, which handles `items` boxes or calls",
            "cases": [
                dict(
                    row,
                    case=row["case"].name,
                    title=row["case"].title,
                    items=row["case"].items,
                    item=row["case"].unit,
                    size=row["case"].size,
                )
                for row in rows
            ],
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(document, f, indent=1)
        print("Results written to", args.json)
    if args.plot:
        plot.plot(document, args.plot)
        print("Chart written to", args.plot)


if __name__ == "__main__":
    main()
