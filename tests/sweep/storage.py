"""Making a folder unwritable for a while, as a test can: root ignores permission bits, so as root
the folder is made immutable (chattr +i) instead of read-only (chmod)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator


def set_writable(folder: Path, writable: bool) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i" if writable else "+i", str(folder)], check=True)
    else:
        folder.chmod(0o755 if writable else 0o555)


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` refuses new files until the block ends (or the test fails)."""
    set_writable(folder, False)
    try:
        yield
    finally:
        set_writable(folder, True)
