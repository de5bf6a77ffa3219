"""What the store builder reads: an ImageFolder tree or a manifest, as a list of records (one per image).

ImageFolder: `<src>/<class>/<image>` (all of it is train), or split folders `<src>/{train,val,heldout,test}/
<class>/<image>` and shift sets `<src>/shift/<name>/<class>/<image>`. Manifest (.csv or .parquet): columns
`path` (or `uri`), `label` (the class name), optional `domain` and `split` (train, val, heldout, test or
shift/<name>); relative paths are relative to the manifest. Sources are read through pyarrow.fs, so a tree or
a manifest may live on S3 or GCS as well as on a local disk.
"""
from __future__ import annotations

import posixpath
import random
from collections import defaultdict
from dataclasses import dataclass, replace

import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainers.data.store import resolve
from trainers.errors import UserError
from trainers.uris import has_scheme

SPLITS = ("train", "val", "heldout", "test")
CARVED = ("val", "heldout", "test")  # carved out of train when not given
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class Record:
    source: str  # a path inside `filesystem` of the scan
    class_name: str
    split: str  # train, val, heldout, test or shift/<name>
    domain: str = ""


@dataclass
class Scan:
    filesystem: pafs.FileSystem
    records: list[Record]
    ignored: list[dict]  # files that are not images: listed in the card, never dropped silently
    given: set[str]  # splits the source names (their folders exist, or the manifest uses them)


def scan(src: str) -> Scan:
    filesystem, inner = resolve(src)
    info = filesystem.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"--src {src} does not exist; give an image folder or a manifest (.csv, .parquet)")
    if info.type == pafs.FileType.File:
        return scan_manifest(filesystem, inner, src)
    return scan_folder(filesystem, inner, src)


def _children(filesystem: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return sorted(filesystem.get_file_info(pafs.FileSelector(path)), key=lambda i: i.path)


def _class_tree(filesystem, root: str, split: str, domain: str, scan_: Scan) -> None:
    for folder in _children(filesystem, root):
        if folder.type != pafs.FileType.Directory:
            scan_.ignored.append({"source": folder.path, "split": split, "reason": "a file outside any class folder"})
            continue
        for item in filesystem.get_file_info(pafs.FileSelector(folder.path, recursive=True)):
            if item.type != pafs.FileType.File:
                continue
            if posixpath.splitext(item.path)[1].lower() in IMAGE_SUFFIXES:
                scan_.records.append(Record(item.path, folder.base_name, split, domain))
            else:
                scan_.ignored.append({"source": item.path, "split": split, "reason": "not an image file name"})


def scan_folder(filesystem: pafs.FileSystem, root: str, src: str) -> Scan:
    result = Scan(filesystem, [], [], {"train"})
    top = [i for i in _children(filesystem, root) if i.type == pafs.FileType.Directory]
    if not any(i.base_name in (*SPLITS, "shift") for i in top):
        _class_tree(filesystem, root, "train", "", result)
    else:
        for folder in top:
            if folder.base_name in SPLITS:
                result.given.add(folder.base_name)
                _class_tree(filesystem, folder.path, folder.base_name, "", result)
            elif folder.base_name == "shift":
                for shift in (i for i in _children(filesystem, folder.path) if i.type == pafs.FileType.Directory):
                    result.given.add(f"shift/{shift.base_name}")
                    _class_tree(filesystem, shift.path, f"shift/{shift.base_name}", shift.base_name, result)
            else:
                raise UserError(f"--src {src}: folder {folder.base_name!r} is not a split; with split folders use "
                                "only train, val, heldout, test and shift/<name>, or give class folders alone")
    if not result.records:
        raise UserError(f"--src {src} holds no images; give class folders of images (<src>/<class>/<image>)")
    return result


def scan_manifest(filesystem: pafs.FileSystem, path: str, src: str) -> Scan:
    try:
        with filesystem.open_input_file(path) as stream:
            table = pq.read_table(stream) if path.endswith(".parquet") else pacsv.read_csv(stream)
    except Exception as err:  # any unreadable manifest: say which and why
        raise UserError(f"--src {src}: cannot read the manifest ({type(err).__name__}: {err})") from None
    column = "path" if "path" in table.column_names else "uri"
    if column not in table.column_names or "label" not in table.column_names:
        raise UserError(f"--src {src}: a manifest needs columns path (or uri) and label, optional domain and "
                        f"split; it has {table.column_names}")
    rows = table.to_pylist()
    base = posixpath.dirname(path)
    records = []
    for row in rows:
        split = row.get("split") or "train"
        if split not in SPLITS and not (split.startswith("shift/") and len(split) > 6):
            raise UserError(f"--src {src}: split {split!r} of {row[column]} is not one of {', '.join(SPLITS)} "
                            "or shift/<name>")
        records.append(Record(_source(filesystem, base, str(row[column])), str(row["label"]), split,
                              str(row.get("domain") or "")))
    if not records:
        raise UserError(f"--src {src}: the manifest lists no images")
    return Scan(filesystem, records, [], {"train"} | {r.split for r in records})


def _source(filesystem: pafs.FileSystem, base: str, path: str) -> str:
    """A manifest entry as a path inside the manifest's filesystem (relative paths: beside the manifest)."""
    if has_scheme(path):
        other, inner = pafs.FileSystem.from_uri(path)
        if other.type_name != filesystem.type_name:
            raise UserError(f"manifest entry {path}: images must live on the manifest's filesystem "
                            f"({filesystem.type_name})")
        return inner
    return path if posixpath.isabs(path) else posixpath.normpath(posixpath.join(base, path))


def class_list(records: list[Record], given: list[str] | None) -> list[str]:
    """The classes: the given list, else the sorted class names of train. Any other label is an error."""
    classes = given or sorted({r.class_name for r in records if r.split == "train"})
    known = set(classes)
    for record in records:
        if record.class_name not in known:
            raise UserError(f"label {record.class_name!r} of {record.source} ({record.split}) is not in the class "
                            f"list ({len(classes)} classes{'' if given else ' of train'}, e.g. {classes[:3]}); "
                            "fix the label, add training images of that class, or give --classes")
    return classes


def carve(records: list[Record], given: set[str], fraction: float, seed: int) -> list[Record]:
    """Val/heldout/test splits the source does not give, each a deterministic stratified `fraction` of
    every train class."""
    missing = [s for s in CARVED if s not in given]
    if not missing:
        return records
    if fraction * len(missing) >= 1:
        raise UserError(f"--carve {fraction:g} of train for each of {', '.join(missing)} leaves no training images; "
                        f"give a fraction below {1 / len(missing):.3g} or give those splits")
    by_class: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record.split == "train":
            by_class[record.class_name].append(record)
    carved = [r for r in records if r.split != "train"]
    for name, members in sorted(by_class.items()):
        members = sorted(members, key=lambda r: r.source)
        random.Random(f"{seed}:{name}").shuffle(members)
        take = max(1, round(fraction * len(members)))
        if len(members) <= take * len(missing):
            raise UserError(f"class {name!r} has {len(members)} training images, too few to carve "
                            f"{', '.join(missing)} from ({take} each); add images or give those splits")
        for i, split in enumerate(missing):
            carved += [replace(r, split=split) for r in members[i * take:(i + 1) * take]]
        carved += members[len(missing) * take:]
    return carved
