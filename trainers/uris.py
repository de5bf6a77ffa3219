"""Where a path points, decided once: local paths and file:// URIs are local files; anything else
with a scheme (s3://, gs://, ...) is remote storage, read and written through pyarrow.fs."""
from __future__ import annotations

import os
from pathlib import Path


def is_remote(uri: str) -> bool:
    """True for s3://, gs:// and other pyarrow.fs URIs; False for local paths and file:// URIs."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    """The local path of a local path or file:// URI."""
    return Path(uri.removeprefix("file://"))


def has_scheme(uri: str) -> bool:
    """True for any URI (s3://, gs://, file://); False for a plain local path."""
    return "://" in uri


def absolute(uri: str) -> str:
    """URIs as they are, local paths made absolute (`~` expanded); what pyarrow.fs.FileSystem.from_uri
    takes, and what a config keeps (Tune runs trials in other working directories). "" stays ""."""
    return uri if not uri or has_scheme(uri) else str(Path(uri).expanduser().resolve())


def unwritable_folder(path: Path) -> Path | None:
    """Whether `path` can be created or written as a folder without creating anything: None when its
    nearest existing part is a folder we may write in, else that part (a file, or a read-only folder)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    return None if existing.is_dir() and os.access(existing, os.W_OK) else existing
