"""What the benchmarks measure with: device syncs, CPU seconds (this process and its children) and peak
resident memory, each defined once for bench/*.py."""
from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock time includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its live children (DataLoader workers), from
    getrusage and /proc (psutil when installed); ended children are counted by getrusage."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime + live_children_cpu()


def live_children_cpu() -> float:
    try:
        import psutil

        return sum(sum(c.cpu_times()[:2]) for c in psutil.Process().children(recursive=True))
    except ImportError:
        pass
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            for pid in (task / "children").read_text().split():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except OSError:  # a thread or a child that just ended
            continue
    return total


class PeakMemory:
    """Peak resident memory over the resident memory at entry: VmHWM after resetting it (Linux),
    else a thread sampling VmRSS every millisecond."""

    def __enter__(self) -> "PeakMemory":
        self.baseline = status_bytes("VmRSS")
        self.sampled = 0
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.thread = None
        except OSError:
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.sampled = max(self.sampled, status_bytes("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.thread is None:
            peak = status_bytes("VmHWM")
        else:
            self.running = False
            self.thread.join()
            peak = self.sampled
        self.over = max(0, peak - self.baseline)


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")
