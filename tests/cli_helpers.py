"""Running the `ate` command as a user does: a subprocess, one thread, its exit code and output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

# a hang guard, not a tolerance: the slowest command the CLI tests run takes ~20 s on an idle core, and ~10x that
# beside a benchmark on the same 2 cores (where 180 s fired)
TIMEOUT_S = 600


def ate(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ate", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=TIMEOUT_S)


def ok(r: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must succeed without a traceback."""
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


def help_text(*args) -> str:
    """`ate <args> --help` as one line of words: without tyro's boxes and the wrapping."""
    out = ok(ate(*args, "--help"))
    return " ".join(out.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


def ok_stderr(r: subprocess.CompletedProcess) -> str:
    """The stderr (log lines) of a command that must succeed without a traceback."""
    ok(r)
    return r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(nproc: int, hf_home, *args) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` of `args` (a script and its arguments, or "-m", module, ...) on `nproc` local
    processes: the command and the variables to add to its environment. No `accelerate config` file is read or
    asked for: every setting is a flag, and HF_HOME (where accelerate looks for default_config.yaml) is
    `hf_home`, a folder without one.

    On the CPU this is `--multi_gpu`, accelerate's torchrun launcher: `--cpu --num_processes N` starts ONE
    process (accelerate's simple launcher; its multi-CPU mode needs mpirun and a hostfile). The tests pin the
    trainers' device to the CPU (`--device cpu`), so the ranks run there, gloo, whatever GPUs the machine has."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *map(str, args)]
    return cmd, {"HF_HOME": str(hf_home)}
