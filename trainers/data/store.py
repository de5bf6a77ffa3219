"""The image store: Parquet shards of JPEG images, read and written through pyarrow.fs.

A split is a directory (a local path or a URI: s3://, gs://, file://) of shards `part-NNNNN.parquet`, or a
single Parquet file. Columns: `image` (JPEG bytes; older single files may hold PNG), `label` (int index into
the class list), `class_name`, `source` (where the image came from), `domain`. Every shard's schema metadata
holds the dataset's whole class list; a split that covers only some classes (a shift set) also names the
classes it covers, so that its logits can be projected onto them at evaluation.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from trainers.errors import UserError
from trainers.uris import absolute, has_scheme

STORE_FORMAT = "soupsweep-store/1"
CLASSES_KEY = b"soupsweep.classes"
COVERS_KEY = b"soupsweep.covers"
SHARD_BYTES = 128 * 2**20  # about 128 MB per shard
SHARD_NAME = re.compile(r"part-\d{5,}\.parquet")  # the names ShardWriter gives its shards
ROW_GROUP_ROWS = 256  # the unit a rank reads: small enough to deal shards out evenly
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int32()), ("class_name", pa.string()),
                    ("source", pa.string()), ("domain", pa.string())])


@dataclass
class ImageSet:
    """A decoded split: uint8 images (N, 3, S, S), int64 labels (N,), the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    covers: list[str] | None = None  # the classes a subset split covers; None: all of them

    def __len__(self) -> int:
        return len(self.labels)


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it, for a local path or a pyarrow.fs URI."""
    if not path:
        raise UserError("data: a split path is empty; set data.train, data.val, data.heldout and data.test")
    if not has_scheme(path):
        return pafs.LocalFileSystem(), absolute(path)
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(f"data: cannot open {path} ({err}); use a local path, s3://, gs:// or file://") from None


def shard_paths(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files of a split: the file itself, or the sorted `*.parquet` of a directory."""
    filesystem, inner = resolve(path)
    info = filesystem.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"data: {path} does not exist; check the path in your config "
                        "(or run without --config to generate the demo data)")
    if info.type == pafs.FileType.File:
        return filesystem, [inner]
    files = sorted(i.path for i in filesystem.get_file_info(pafs.FileSelector(inner, recursive=False))
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    if not files:
        raise UserError(_not_a_split(filesystem, inner, path))
    return filesystem, files


def _not_a_split(filesystem: pafs.FileSystem, inner: str, path: str) -> str:
    """Why a directory is not a split: a store's root (its card.json lists its splits), or no store at all."""
    try:
        with filesystem.open_input_file(f"{inner}/card.json") as stream:
            splits = [f"{name}: {path.rstrip('/')}/{split['path']}" for name, split in json.loads(stream.read())["splits"].items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return (f"data: {path} is a directory without Parquet shards; build a store with "
                "`python -m trainers.data.build --src <images> --out <dir>`")
    return (f"data: {path} is a whole store, not one split; give each data key its split folder ({', '.join(splits)}), "
            "as in the data section trainers.data.build printed")


def open_shards(path: str) -> list[pq.ParquetFile]:
    filesystem, files = shard_paths(path)
    shards = []
    for file in files:
        try:
            shards.append(pq.ParquetFile(filesystem.open_input_file(file)))
        except (OSError, pa.ArrowInvalid) as err:
            raise UserError(f"data: cannot read {file} as Parquet ({err})") from None
    return shards


def _metadata(shard: pq.ParquetFile, key: bytes):
    value = (shard.schema_arrow.metadata or {}).get(key)
    return None if value is None else json.loads(value)


def read_classes(path: str) -> list[str]:
    """The class list of a split, from its schema metadata alone (no image is read)."""
    classes = _metadata(open_shards(path)[0], CLASSES_KEY)
    if classes is None:
        raise UserError(f"data: {path} has no class list in its metadata; build it with "
                        "`python -m trainers.data.build` (or trainers.data.store.write_split)")
    return classes


def read_covers(path: str) -> list[str] | None:
    """The classes a subset split (a shift set) covers, or None when it names none (all classes)."""
    return _metadata(open_shards(path)[0], COVERS_KEY)


def read_columns(path: str, columns: list[str]) -> pa.Table:
    return pa.concat_tables(shard.read(columns=columns) for shard in open_shards(path))


def check_split(path: str, classes: list[str], subset_ok: bool = False) -> int:
    """Check a split's class list and labels without decoding images; returns its size.

    Every split lists the same classes; only a subset split (`subset_ok`, the shift sets) may lack images
    of some of them."""
    for shard in open_shards(path):
        own = _metadata(shard, CLASSES_KEY)
        if own != classes:
            raise UserError(f"data: {path} lists classes {own}, but the training set lists {classes}; "
                            "every split must use the same class list in the same order")
    labels = read_columns(path, ["label"]).column("label").to_pylist()
    if not labels:
        raise UserError(f"data: {path} holds no images; give a non-empty split")
    bad = sorted({label for label in labels if not 0 <= label < len(classes)})
    if bad:
        raise UserError(f"data: {path} has labels {bad[:5]} outside the class list "
                        f"(0..{len(classes) - 1}: {classes}); fix the labels or the class list")
    present = set(labels)
    missing = [name for i, name in enumerate(classes) if i not in present]
    if missing and not subset_ok:
        raise UserError(f"data: {path} has no images of classes {missing[:5]}; train, val, heldout and test "
                        "need every class (only shift sets may cover a subset)")
    return len(labels)


def check_dataset(data) -> list[str]:
    """Check every split of a DataConfig before training; returns the class list of `train`."""
    for split, path in {"train": data.train, **data.splits()}.items():
        if not path:
            raise UserError(f"data.{split.replace('/', '.')}: no path given; every sweep needs "
                            "train, val, heldout and test splits")
    classes = read_classes(data.train)
    for split, path in {"train": data.train, **data.splits()}.items():
        check_split(path, classes, subset_ok=split.startswith("shift/"))
    return classes


def read_split(path: str, image_size: int) -> ImageSet:
    """Decode a whole split on the CPU at `image_size` (short side resized, centre-cropped)."""
    from trainers.data.cache import load_eval_set  # the one evaluation decode, shared with the GPU path

    cached = load_eval_set(path, image_size, torch.device("cpu"))
    return ImageSet(cached.images, cached.labels, cached.classes, cached.covers)


@dataclass
class ShardWriter:
    """Writes one split as shards of about `shard_bytes`; `close` returns the split's card entry."""

    path: str  # the split's directory (local or URI)
    classes: list[str]
    covers: list[str] | None = None
    shard_bytes: int = SHARD_BYTES
    row_group_rows: int = ROW_GROUP_ROWS
    filesystem: pafs.FileSystem | None = None  # given: `path` is a path inside it, not a URI
    _rows: list[dict] = field(default_factory=list)
    _size: int = 0
    _shards: list[dict] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.filesystem is None:
            self.filesystem, self.inner = resolve(self.path)
        else:
            self.inner = self.path
        if self.filesystem.get_file_info(self.inner).type == pafs.FileType.Directory:
            for stale in self.filesystem.get_file_info(pafs.FileSelector(self.inner)):
                if SHARD_NAME.fullmatch(stale.base_name):  # an earlier write's shards; never other files
                    self.filesystem.delete_file(stale.path)
        self.filesystem.create_dir(self.inner, recursive=True)

    def add(self, image: bytes, label: int, source: str = "", domain: str = "") -> None:
        name = self.classes[label]
        self._rows.append({"image": image, "label": label, "class_name": name, "source": source, "domain": domain})
        self._counts[name] = self._counts.get(name, 0) + 1
        self._size += len(image)
        if self._size >= self.shard_bytes:
            self._flush()

    def _flush(self, even_empty: bool = False) -> None:
        if not self._rows and not even_empty:
            return
        metadata = {CLASSES_KEY: json.dumps(self.classes).encode()}
        if self.covers is not None:
            metadata[COVERS_KEY] = json.dumps(self.covers).encode()
        table = pa.Table.from_pylist(self._rows, SCHEMA.with_metadata(metadata))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=self.row_group_rows, compression="none")  # JPEG is compressed
        data = sink.getvalue().to_pybytes()
        name = f"part-{len(self._shards):05d}.parquet"
        with self.filesystem.open_output_stream(f"{self.inner}/{name}") as out:
            out.write(data)
        self._shards.append({"file": name, "rows": len(self._rows), "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()})
        self._rows, self._size = [], 0

    def close(self) -> dict:
        self._flush(even_empty=not self._shards)  # an empty split is still a split: readers say it is empty
        entry = {"rows": sum(s["rows"] for s in self._shards),
                 "counts": {c: self._counts[c] for c in self.classes if c in self._counts},
                 "shards": self._shards}
        if self.covers is not None:
            entry["covers"] = self.covers
        return entry


def write_split(path: str | Path, images: torch.Tensor, labels: list[int], classes: list[str],
                domain: str = "", covers: list[str] | None = None, quality: int = 95, **writer) -> dict:
    """Write uint8 images (N, 3, H, W) with integer labels as one split of the store (JPEG shards)."""
    from torchvision.io import encode_jpeg

    out = ShardWriter(str(path), classes, covers, **writer)
    for i, (image, label) in enumerate(zip(images, labels)):
        out.add(encode_jpeg(image, quality=quality).numpy().tobytes(), int(label), f"generated:{i}", domain)
    return out.close()


def write_card(out: str, card: dict, filesystem: pafs.FileSystem | None = None) -> str:
    """The dataset card `<out>/card.json`: classes, counts per class and split, shard checksums, skips.
    With `filesystem`, `out` is a path inside it."""
    filesystem, inner = resolve(out) if filesystem is None else (filesystem, out)
    filesystem.create_dir(inner, recursive=True)
    with filesystem.open_output_stream(f"{inner}/card.json") as stream:
        stream.write(json.dumps(card, indent=1).encode())
    return f"{out.rstrip('/')}/card.json"
