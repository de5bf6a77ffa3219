"""Build an image store: `python -m trainers.data.build --src <folder|manifest.csv|manifest.parquet>
--out <dir|s3://…|gs://…> [--size 256]`.

Each image is decoded once, its short side resized to `--size` (aspect kept; smaller images are kept as
they are), re-encoded as JPEG and written to Parquet shards of about `--shard-mb` MB per split
(<out>/train, <out>/val, <out>/heldout, <out>/test, <out>/shift/<name>), then a dataset card
<out>/card.json: class list, counts per class and split, the sha256 of every shard, and every file that
was skipped with the reason. val, heldout and test are carved out of train (stratified, deterministic)
when the source does not give them.

`--out` must be new, an empty directory, or (with `--overwrite`) a store built earlier, outside the source;
the store is built in a temporary sibling and moved into place at the end, so a failed build leaves nothing.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import random
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import yaml
from PIL import Image
from tqdm import tqdm

from trainers.data.sources import CARVED, SPLITS, Record, Scan, carve, class_list, scan
from trainers.data.staging import plan_output, staged
from trainers.data.store import ROW_GROUP_ROWS, STORE_FORMAT, ShardWriter, write_card
from trainers.errors import UserError
from trainers.uris import absolute


@dataclass
class BuildOptions:
    size: int = 256  # short side of the stored images
    quality: int = 90  # JPEG quality of the re-encoded images
    shard_bytes: int = 128 * 2**20
    row_group_rows: int = ROW_GROUP_ROWS
    carve: float = 0.1  # fraction of each train class carved out for each missing val/heldout/test split
    seed: int = 0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    classes: list[str] | None = None  # the class list; None: the sorted class names of train


def prepare(blob: bytes, size: int, quality: int) -> bytes:
    """Decode, convert to RGB, shrink the short side to `size`, encode as JPEG."""
    image = Image.open(io.BytesIO(blob))
    image.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 1/2, 1/4, 1/8 while decoding
    image = image.convert("RGB")
    short = min(image.size)
    if short > size:
        scale = size / short
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def read_and_prepare(scanned: Scan, record: Record, options: BuildOptions) -> tuple[bytes | None, str]:
    """The stored JPEG of one source image, or None and why it cannot be used."""
    try:
        with scanned.filesystem.open_input_file(record.source) as stream:
            blob = stream.read()
    except OSError as err:
        return None, f"unreadable file: {err}"
    try:
        return prepare(blob, options.size, options.quality), ""
    except Exception as err:  # PIL raises many types for broken files: every one is a skip with its reason
        return None, f"not a decodable image ({type(err).__name__}: {err})"


def split_order(records: list[Record]) -> list[str]:
    named = sorted({r.split for r in records} - set(SPLITS))
    return [s for s in SPLITS if any(r.split == s for r in records)] + named


def build_store(src: str, out: str, options: BuildOptions, overwrite: bool = False) -> dict:
    """Build the store; returns its card. Raises UserError for anything the user must fix, before anything
    is created; a build that fails leaves nothing behind (staging.py)."""
    output = plan_output(src, out, overwrite)
    scanned = scan(src)
    records = carve(scanned.records, scanned.given, options.carve, options.seed)
    classes = class_list(records, options.classes)
    for split in sorted(scanned.given | set(CARVED)):
        _require_classes(split, {r.class_name for r in records if r.split == split}, classes, "")
    card = {"format": STORE_FORMAT, "source": src, "classes": classes, "size": options.size, "splits": {},
            "skipped": list(scanned.ignored)}
    # the bar only on a terminal; `with` closes it before the error line of a failed build is printed
    with staged(output) as staging, ThreadPoolExecutor(options.workers) as pool, \
            tqdm(total=len(records), desc="building store", unit="img", disable=None) as progress:
        build = _Build(scanned, options, classes, output.filesystem, pool, progress, card["skipped"])
        for split in split_order(records):
            members = sorted((r for r in records if r.split == split), key=lambda r: r.source)
            random.Random(f"{options.seed}:{split}").shuffle(members)  # shards mix classes: batches do too
            card["splits"][split] = {"path": split, **_write_split(build, members, split, f"{staging}/{split}")}
        write_card(staging, card, output.filesystem)
    return card


@dataclass
class _Build:
    """What the writes of every split share."""

    scanned: Scan
    options: BuildOptions
    classes: list[str]
    filesystem: pafs.FileSystem
    pool: ThreadPoolExecutor
    progress: tqdm
    skipped: list[dict]  # every file left out, with the reason: the card lists them


def _write_split(build: _Build, members: list[Record], split: str, path: str) -> dict:
    classes, options = build.classes, build.options
    index = {name: i for i, name in enumerate(classes)}
    present = [c for c in classes if any(r.class_name == c for r in members)]
    covers = present if split.startswith("shift/") and len(present) < len(classes) else None
    writer = ShardWriter(path, classes, covers, options.shard_bytes, options.row_group_rows, build.filesystem)
    reasons = []
    prepared = build.pool.map(lambda r: read_and_prepare(build.scanned, r, options), members)
    for record, (blob, reason) in zip(members, prepared):
        build.progress.update(1)
        if blob is None:
            build.skipped.append({"source": record.source, "split": split, "reason": reason})
            reasons.append(f"{record.source}: {reason}")
            continue
        writer.add(blob, index[record.class_name], record.source, record.domain)
    entry = writer.close()
    first_skip = f" (skipped {len(reasons)}, e.g. {reasons[0]})" if reasons else ""
    if entry["rows"] == 0:
        raise UserError(f"split {split} is empty: none of its {len(members)} images could be used{first_skip}")
    _require_classes(split, set(entry["counts"]), classes, first_skip)
    return entry


def _require_classes(split: str, names: set[str], classes: list[str], note: str) -> None:
    """train, val, heldout and test need every class; shift sets may cover a subset."""
    if not names:
        raise UserError(f"split {split} is empty; put images in it or leave it out to carve it from train")
    missing = [c for c in classes if c not in names]
    if missing and not split.startswith("shift/"):
        raise UserError(f"class {missing[0]!r} has no images in split {split}{note} ({len(missing)} classes "
                        "missing); every class needs images in train, val, heldout and test (only shift sets "
                        "may cover a subset)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainers.data.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="image folder, or manifest .csv/.parquet (local or URI)")
    parser.add_argument("--out", required=True, help="store directory: a local path, s3://… or gs://…; new, empty, "
                        "or a store built earlier (with --overwrite), outside --src")
    parser.add_argument("--size", type=int, default=256, help="short side of the stored images (default 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--shard-mb", type=float, default=128, help="shard size in MB (default 128)")
    parser.add_argument("--carve", type=float, default=0.1,
                        help="fraction of each train class carved out per missing val/heldout/test split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the carve-out and of the row order")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding threads")
    parser.add_argument("--classes", help="text file with the class list, one per line (default: train's folders)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the store built earlier at --out (its card and shards only)")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> BuildOptions:
    """The flags as BuildOptions; UserError for a value outside its range (before anything is created)."""
    for flag, value, valid, rule in (
            ("--size", args.size, args.size >= 1, "a short side in pixels, at least 1"),
            ("--quality", args.quality, 1 <= args.quality <= 100, "a JPEG quality from 1 to 100"),
            ("--shard-mb", args.shard_mb, math.isfinite(args.shard_mb) and args.shard_mb * 2**20 >= 1,
             "a shard size in MB above 0"),
            ("--carve", args.carve, 0 < args.carve < 1, "a fraction above 0 and below 1, e.g. 0.1"),
            ("--workers", args.workers, args.workers >= 1, "a number of decoding threads, at least 1")):
        if not valid:
            raise UserError(f"{flag} {value}: give {rule}")
    return BuildOptions(args.size, args.quality, int(args.shard_mb * 2**20), carve=args.carve, seed=args.seed,
                        workers=args.workers, classes=read_class_file(args.classes) if args.classes else None)


def read_class_file(path: str) -> list[str]:
    """The class list of `--classes`: one name per line, blank lines ignored, each name once."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--classes {path}: cannot read it ({getattr(err, 'strerror', None) or err}); give a "
                        "text file with one class name per line") from None
    if not names:
        raise UserError(f"--classes {path} lists no class names; write one per line")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise UserError(f"--classes {path} lists {repeated[0]!r} more than once; list each class once")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        card = build_store(args.src, args.out, options_from(args), args.overwrite)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = absolute(args.out).rstrip("/")  # absolute: the sweep may run from another directory
    print(f"store: {out} ({len(card['classes'])} classes; skipped {len(card['skipped'])} files, listed in "
          f"{out}/card.json)\ndata section for your sweep config:")
    data: dict = {split: f"{out}/{split}" for split in SPLITS}
    shifts = {s.removeprefix("shift/"): f"{out}/{s}" for s in card["splits"] if s.startswith("shift/")}
    if shifts:
        data["shift"] = shifts
    print(yaml.safe_dump({"data": data}, sort_keys=False, allow_unicode=True), end="")  # quoted where YAML needs it
    return 0


if __name__ == "__main__":
    sys.exit(main())
