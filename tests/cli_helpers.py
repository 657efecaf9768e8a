"""Running the `ate` command as a user does: a subprocess, one thread, its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys

# a hang guard, not a tolerance: the slowest command the CLI tests run takes ~20 s on an idle core
TIMEOUT_S = 180


def ate(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ate", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=TIMEOUT_S)


def ok(r: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must succeed without a traceback."""
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


def ok_stderr(r: subprocess.CompletedProcess) -> str:
    """The stderr (log lines) of a command that must succeed without a traceback."""
    ok(r)
    return r.stderr
