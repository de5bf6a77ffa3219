"""The sweep's console: its own lines on the terminal, everything else the process or its children
write (Python, loggers, native code, subprocesses) in the log file, whose path is printed first."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from sweep.console import say, sweep_console
    logging.basicConfig(level=logging.INFO)
    with sweep_console(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
        print("python noise"); print("stderr noise", file=sys.stderr)
        logging.getLogger("ray.tune").warning("tune noise")
        logging.getLogger("soup.make").warning("leaving out trial t2")
        os.system("echo child noise; echo child error >&2")
        say("trial t1 started")
    print("the table")
""")


def run_console(log: Path, mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_noise_goes_to_the_log_file_named_first(tmp_path):
    log = tmp_path / "sweep" / "console.log"
    shown = run_console(log, "quiet").splitlines()
    assert shown == [f"Ray's and the workers' output: {log} (--verbose prints it here)",
                     "warning: leaving out trial t2", "trial t1 started", "the table"]
    kept = log.read_text()
    for noise in ("python noise", "stderr noise", "tune noise", "child noise", "child error", "trial t1 started"):
        assert noise in kept


def test_verbose_prints_everything_and_writes_no_log(tmp_path):
    log = tmp_path / "console.log"
    shown = run_console(log, "verbose")
    for text in ("python noise", "stderr noise", "tune noise", "child noise", "trial t1 started", "the table"):
        assert text in shown
    assert shown.count("trial t1 started") == 1 and not log.exists()
