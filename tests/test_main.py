"""
python -m ampcore, the self-check: what it reports, and --require-c's exit
status, run as a deployment would run it (a subprocess of this Python).

The suite runs both with the C extension and with AMPCORE_PUREPYTHON=1 (the
fallback CI run); the child inherits this process's environment, so what it
must say follows ampcore.HAS_C_EXTENSION here.
"""

import os
import platform
import subprocess
import sys

import twisted

import ampcore

C_LINE = "C extension: in use"


def run(args, tmp_path, purePython=None):
    """Run python -m ampcore ARGS in tmp_path (not the source tree, whose
    ampcore has no compiled extension)."""
    env = dict(os.environ)
    if purePython is not None:
        env["AMPCORE_PUREPYTHON"] = purePython
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_inherited_environment(tmp_path):
    done = run(["-m", "ampcore"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"ampcore {ampcore.__version__} ({ampcore.__file__})"
    assert lines[1] == f"Twisted {twisted.__version__}"
    assert lines[2] == f"Python {platform.python_implementation()} {platform.python_version()}"
    if ampcore.HAS_C_EXTENSION:
        assert lines[3] == C_LINE
    else:
        assert lines[3] == f"C extension: not in use ({ampcore.FALLBACK_REASON})"
    assert lines[4] == "ampcore.install(): not in effect"
    assert done.stderr == ""


def test_require_c_inherited_environment(tmp_path):
    done = run(["-m", "ampcore", "--require-c"], tmp_path)
    if ampcore.HAS_C_EXTENSION:
        assert done.returncode == 0, done.stderr
        assert C_LINE in done.stdout.splitlines()
        assert done.stderr == ""
    else:
        assert done.returncode == 1
        assert done.stderr == (
            "ampcore: the C extension is required but not in use: "
            f"{ampcore.FALLBACK_REASON}\n"
        )


def test_pure_python_reported(tmp_path):
    done = run(["-m", "ampcore"], tmp_path, purePython="1")
    assert done.returncode == 0, done.stderr
    assert "C extension: not in use (AMPCORE_PUREPYTHON is set)" in done.stdout.splitlines()
    assert C_LINE not in done.stdout.splitlines()


def test_require_c_fails_on_pure_python(tmp_path):
    done = run(["-m", "ampcore", "--require-c"], tmp_path, purePython="1")
    assert done.returncode == 1
    assert done.stderr == (
        "ampcore: the C extension is required but not in use: AMPCORE_PUREPYTHON is set\n"
    )


def test_require_c_passes_without_pure_python(tmp_path):
    """With AMPCORE_PUREPYTHON=0 the C extension is in use where it is
    importable here, which this process can tell even when it runs the
    fallback itself."""
    done = run(["-m", "ampcore", "--require-c"], tmp_path, purePython="0")
    probe = run(
        ["-c", "import ampcore; print(ampcore.HAS_C_EXTENSION)"], tmp_path, purePython="0"
    )
    assert probe.returncode == 0, probe.stderr
    if probe.stdout.strip() == "True":
        assert done.returncode == 0, done.stderr
        assert C_LINE in done.stdout.splitlines()
    else:
        assert done.returncode == 1
    if ampcore.HAS_C_EXTENSION:
        assert probe.stdout.strip() == "True"


def test_install_reported(tmp_path):
    """install() in the same process: in effect only with the C extension
    (without it install() does nothing)."""
    code = (
        "import sys, ampcore; ampcore.install(); "
        "from ampcore.__main__ import main; sys.exit(main([]))"
    )
    done = run(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    expected = "in effect" if ampcore.HAS_C_EXTENSION else "not in effect"
    assert f"ampcore.install(): {expected}" in done.stdout.splitlines()


def test_help(tmp_path):
    done = run(["-m", "ampcore", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m ampcore [-h] [--require-c]")
    assert "--require-c" in done.stdout


def test_unknown_option(tmp_path):
    done = run(["-m", "ampcore", "--no-such-option"], tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-option" in done.stderr
