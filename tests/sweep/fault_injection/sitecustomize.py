"""Fault injection for sweep tests: put this folder on PYTHONPATH and every Python process of the
sweep (the driver, the Ray workers it starts) imports it at start-up.

With SOUPSWEEP_RAISE_ONCE="<epoch>:<marker dir>" set, the first time a rank is about to report epoch
<epoch> (1-based) to Ray Train, that rank raises RuntimeError("injected fault") instead; a marker file
per rank records it, so the retried worker group trains through. Nothing in the product knows about
this: it wraps `sweep.worker.report` when that module is first imported.
"""
import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path

SETTING = os.environ.get("SOUPSWEEP_RAISE_ONCE")


def _raise_once(report, epoch_to_fail: int, markers: Path):
    def wrapped(metrics, checkpoint_dir):
        from trainers.distributed import rank_and_world

        marker = markers / f"rank-{rank_and_world()[0]}"
        if metrics.get("epoch") == epoch_to_fail and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
            raise RuntimeError(f"injected fault at epoch {epoch_to_fail}")
        return report(metrics, checkpoint_dir)

    return wrapped


class _WrapReport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sweep.worker":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            epoch, markers = SETTING.split(":", 1)
            module.report = _raise_once(module.report, int(epoch), Path(markers))

        spec.loader.exec_module = exec_and_wrap
        return spec


if SETTING:
    sys.meta_path.insert(0, _WrapReport())
