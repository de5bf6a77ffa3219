"""Where the store builder writes: never over anything it did not write.

`plan_output` checks `--out` before anything is created: it refuses the source itself, a directory inside or
around the source, and a non-empty directory that is not a store built earlier (`--overwrite` replaces such a
store: its card and the shards the card lists, nothing else in it). `staged` builds into a temporary sibling
of `--out` and moves the result into place only when the build succeeded; after a failure it removes what the
build created, so nothing half-written is left and a replaced store is still whole.
"""
from __future__ import annotations

import json
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.fs as pafs

from trainers.data.store import STORE_FORMAT, resolve
from trainers.errors import UserError
from trainers.owner import left_by_killed, staging_name

CARD = "card.json"


@dataclass
class Output:
    filesystem: pafs.FileSystem
    path: str  # --out inside the filesystem
    staging: str  # the temporary sibling the build writes into
    previous: list[str]  # a replaced store's files, relative to `path`, its card first
    created: str | None  # the topmost missing ancestor of `path`, made by the build (removed after a failure)


def plan_output(src: str, out: str, overwrite: bool) -> Output:
    """Check `--out` against `--src` and what it holds; raises UserError before anything is created."""
    filesystem, path = resolve(out)
    path = path.rstrip("/") or path
    _refuse_overlap(src, out, filesystem, path)
    info = filesystem.get_file_info(path)
    previous: list[str] = []
    if info.type == pafs.FileType.File:
        raise UserError(f"--out {out} is a file; give a new (or empty) directory for the store")
    if info.type == pafs.FileType.Directory and filesystem.get_file_info(pafs.FileSelector(path)):
        previous = store_files(filesystem, path)
        if not previous:
            raise UserError(f"--out {out} is a non-empty directory that is not a store; give a new or empty "
                            "directory (the builder never writes among your files)")
        if not overwrite:
            raise UserError(f"--out {out} already holds a store ({CARD}); pass --overwrite to replace it "
                            "(its card and shards; nothing else in the directory is touched)")
    parent, name = posixpath.split(path)
    return Output(filesystem, path, f"{parent}/{staging_name(name)}", previous,
                  _topmost_missing(filesystem, parent))


def _refuse_overlap(src: str, out: str, filesystem: pafs.FileSystem, path: str) -> None:
    source_fs, source = resolve(src)
    source = source.rstrip("/") or source
    if source_fs.type_name != filesystem.type_name:
        return
    inside = posixpath.commonpath([source, path])
    if source == path:
        raise UserError(f"--out {out} is the source (--src); give a new directory for the store")
    if inside == source:
        raise UserError(f"--out {out} is inside the source {src}; give a directory outside it")
    if inside == path:
        raise UserError(f"--out {out} contains the source {src}; give a new directory outside it")


def store_files(filesystem: pafs.FileSystem, path: str) -> list[str]:
    """A store's own files (its card first, then the shards its card lists), relative to `path`;
    [] when `path` holds no card of a store built by this package."""
    try:
        with filesystem.open_input_file(f"{path}/{CARD}") as stream:
            card = json.loads(stream.read())
    except (OSError, ValueError):
        return []
    if not isinstance(card, dict) or card.get("format") != STORE_FORMAT:
        return []
    files = [CARD]
    for entry in card.get("splits", {}).values():
        for shard in entry.get("shards", []):
            name = posixpath.normpath(posixpath.join(entry["path"], shard["file"]))
            if name.startswith(("../", "/")):
                return []  # a card pointing outside its store is not one this package wrote
            if filesystem.get_file_info(f"{path}/{name}").is_file:
                files.append(name)
    return files


def _topmost_missing(filesystem: pafs.FileSystem, folder: str) -> str | None:
    missing = None
    while folder not in ("", "/") and filesystem.get_file_info(folder).type == pafs.FileType.NotFound:
        missing, folder = folder, posixpath.dirname(folder)
    return missing


@contextmanager
def staged(output: Output):
    """Yields the directory to build into; on success the built store replaces `output.path`'s store.
    A staging folder of this `--out` that a killed build left is removed first."""
    _remove_left_by_killed(output)
    try:
        yield output.staging
        _publish(output)
    except BaseException:
        _remove(output.filesystem, output.created or output.staging)
        raise


def _remove_left_by_killed(output: Output) -> None:
    parent, name = posixpath.split(output.path)
    found = output.filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    for stale in left_by_killed((posixpath.basename(i.path) for i in found), name):
        _remove(output.filesystem, f"{parent}/{stale}")


def _publish(output: Output) -> None:
    fs = output.filesystem
    if not output.previous and isinstance(fs, pafs.LocalFileSystem):
        fs.move(output.staging, output.path)  # one rename (onto a missing or empty directory)
        return
    built = sorted(i.path[len(output.staging) + 1:] for i in fs.get_file_info(
        pafs.FileSelector(output.staging, recursive=True)) if i.type == pafs.FileType.File)
    built = [name for name in built if name != CARD] + [CARD]  # the card last: a store is whole once it has one
    clash = [name for name in built if name not in output.previous
             and fs.get_file_info(f"{output.path}/{name}").type != pafs.FileType.NotFound]
    if clash:
        raise UserError(f"--out {output.path}/{clash[0]} is not part of the previous store, but the new store "
                        "would be written there; move it away and build again")
    aside = f"{output.staging}/.previous"  # inside the staging folder: removed with it
    _move_all(fs, output.previous, output.path, aside)
    moved: list[str] = []
    try:
        for name in built:
            _move_all(fs, [name], output.staging, output.path)
            moved.append(name)
    except BaseException:
        _move_all(fs, moved, output.path, output.staging)  # the new files out again...
        _move_all(fs, output.previous, aside, output.path)  # ...and the previous store back in place
        raise
    _remove(fs, output.staging)
    _remove_emptied(fs, output.path, output.previous)


def _move_all(fs: pafs.FileSystem, names: list[str], source: str, target: str) -> None:
    for name in names:
        if fs.get_file_info(f"{source}/{name}").is_file:
            fs.create_dir(posixpath.dirname(f"{target}/{name}"), recursive=True)
            fs.move(f"{source}/{name}", f"{target}/{name}")


def _remove_emptied(fs: pafs.FileSystem, root: str, names: list[str]) -> None:
    """The split folders of a replaced store that no longer hold anything (deepest first)."""
    folders = {posixpath.dirname(name) for name in names}
    folders |= {posixpath.dirname(folder) for folder in folders}
    for folder in sorted((f for f in folders if f), key=len, reverse=True):
        path = f"{root}/{folder}"
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory and not fs.get_file_info(pafs.FileSelector(path)):
            fs.delete_dir(path)


def _remove(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
