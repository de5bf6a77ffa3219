"""python clusters/mlflow_db.py backup|restore DB [--to URI]

The MLflow server of a launcher cluster keeps its runs in a sqlite file on the head's disk, and
`ray down` deletes that disk. `backup` copies a consistent snapshot of the file (sqlite's online
backup: safe while the server runs) to `$SOUPSWEEP_STORAGE/mlflow/mlflow.db`; `restore` copies it
back when there is one (the head's setup runs it, so a new head starts with the old runs).
Artifacts are already in the bucket (`mlflow server --artifacts-destination`).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python clusters/mlflow_db.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["backup", "restore"])
    parser.add_argument("db", type=Path, help="the server's sqlite file, e.g. ~/mlflow/mlflow.db")
    parser.add_argument("--to", dest="uri", help="where the copy lives (default: $SOUPSWEEP_STORAGE/mlflow/mlflow.db)")
    return parser.parse_args(argv)


def backup(db: Path, uri: str) -> None:
    """Snapshot `db` with sqlite's backup API (consistent while MLflow writes), then upload it."""
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "mlflow.db"
        source, target = sqlite3.connect(db), sqlite3.connect(snapshot)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        fs, path = pafs.FileSystem.from_uri(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # local paths need it; buckets ignore it
        pafs.copy_files(str(snapshot), path, destination_filesystem=fs)


def restore(db: Path, uri: str) -> bool:
    """Download the copy at `uri` to `db`; False when there is no copy."""
    fs, path = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(db.name + ".partial")
    pafs.copy_files(uri, str(partial))
    partial.rename(db)  # the server never sees half a file
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = args.uri or (os.environ.get("SOUPSWEEP_STORAGE", "").rstrip("/") + "/mlflow/mlflow.db")
    if uri.startswith("/mlflow/"):
        print("error: SOUPSWEEP_STORAGE is not set; give --to URI", file=sys.stderr)
        return 2
    if "://" not in uri:
        uri = f"file://{Path(uri).resolve()}"
    db = args.db.expanduser()
    if args.action == "backup":
        if not db.is_file():
            print(f"error: {db} does not exist", file=sys.stderr)
            return 2
        backup(db, uri)
        print(f"backed up {db} to {uri}")
    elif restore(db, uri):
        print(f"restored {db} from {uri}")
    else:
        print(f"no backup at {uri}: MLflow starts with an empty {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
