"""The training loader, the batched augmentation (CPU path) and the evaluation cache, on generated images."""
from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import encode_jpeg, encode_png

from trainers.augment import BatchAugment, crop_boxes, mix, soft_targets
from trainers.config import AugConfig, ModelConfig
from trainers.data.cache import load_eval_set
from trainers.data.decode import decode_batch, decode_centre
from trainers.data.loader import ShuffleBuffer, TrainLoader, epoch_rows, prefetched, row_groups
from trainers.data.randaugment import randaugment
from trainers.data.store import open_shards, read_columns, write_split
from trainers.data.synthetic import CLASSES, render
from trainers.evaluate import image_features, split_features
from trainers.model import build_zeroshot_classifier

CPU = torch.device("cpu")
PLAIN = AugConfig(min_scale=0.5, hflip=False)


@pytest.fixture(scope="module")
def uneven_store(tmp_path_factory) -> str:
    """53 images of different sizes in shards of uneven row groups (5 rows each, the last one 3)."""
    gen = torch.Generator().manual_seed(3)
    path = tmp_path_factory.mktemp("uneven") / "train"
    labels = (torch.arange(53) % 4).tolist()
    images = render(torch.tensor(labels), "photo", 20, gen)
    write_split(path, images, labels, CLASSES, row_group_rows=5, shard_bytes=8000)
    return str(path)


def test_no_sample_is_seen_twice_across_ranks_within_an_epoch(uneven_store):
    units = row_groups(open_shards(uneven_store))
    assert len(open_shards(uneven_store)) > 1 and {u.rows for u in units} == {5, 3}
    for epoch in (0, 1):
        slices = [epoch_rows(units, seed=4, epoch=epoch, rank=r, world=3) for r in range(3)]
        assert [len(s) for s in slices] == [17, 17, 17]  # equal steps on every rank
        assert len(set().union(*slices)) == 51 and set().union(*slices) <= set(range(53))
    assert epoch_rows(units, 4, 0, 0, 3) != epoch_rows(units, 4, 1, 0, 3)  # a new deal every epoch


def test_each_rank_reads_the_rows_of_its_slice(uneven_store):
    everything = read_columns(uneven_store, ["image"]).column("image").to_pylist()
    digest = [hashlib.sha1(blob).hexdigest() for blob in everything]
    read = []
    for rank in range(2):
        loader = TrainLoader(uneven_store, PLAIN, 16, 4, seed=1, device=CPU, rank=rank, world=2)
        blobs = [blob for chunk, _ in loader.chunks(2, torch.Generator()) for blob in chunk]
        units = row_groups(open_shards(uneven_store))
        assert sorted(hashlib.sha1(b).hexdigest() for b in blobs) == sorted(
            digest[i] for i in epoch_rows(units, 1, 2, rank, 2))
        read.append({hashlib.sha1(b).hexdigest() for b in blobs})
    assert len(read[0]) == len(read[1]) == 26 and not read[0] & read[1]


def test_the_shuffle_buffer_hands_out_every_row_once_in_a_new_order():
    chunks = iter([([bytes([i]) for i in range(k, k + 10)], list(range(k, k + 10))) for k in range(0, 100, 10)])
    rows = ShuffleBuffer(chunks, fill=30)
    gen = torch.Generator().manual_seed(0)
    batches = [rows.take(8, gen) for _ in range(12)]
    labels = [label for _, batch in batches for label in batch]
    assert len(labels) == len(set(labels)) == 96 and set(labels) <= set(range(100))
    assert all(blobs == [bytes([x]) for x in batch] for blobs, batch in batches)  # rows stay whole
    assert labels[:8] != list(range(8)) and max(labels[:8]) < 30  # shuffled within the buffer


def test_batches_are_reproducible_per_seed_rank_and_epoch(uneven_store):
    aug = AugConfig(min_scale=0.3, hflip=True, randaug_n=2, randaug_m=9)

    def first_batch(seed, rank, epoch):
        loader = TrainLoader(uneven_store, aug, 16, 8, seed=seed, device=CPU, rank=rank, world=2)
        assert len(loader) == 3  # 26 rows per rank, 8 per batch
        return next(iter(loader.epoch(epoch)))

    images, labels = first_batch(0, 0, 0)
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    again, _ = first_batch(0, 0, 0)
    assert torch.equal(images, again)
    assert not torch.equal(images, first_batch(0, 0, 1)[0]) and not torch.equal(images, first_batch(0, 1, 0)[0])
    assert not torch.equal(images, first_batch(1, 0, 0)[0])


def test_crop_scales_and_ratios_fall_within_the_configured_range():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[256.0, 341.0]] * 500 + [[300.0, 200.0]] * 500)
    boxes = crop_boxes(sizes, (0.25, 0.6), gen)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    scale = width * height / (sizes[:, 0] * sizes[:, 1])
    assert scale.min() > 0.24 and scale.max() < 0.61  # rounding to whole pixels moves it a little
    assert (width / height).min() > 0.74 and (width / height).max() < 1.35
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= sizes[:, 1]).all() and (boxes[:, 3] <= sizes[:, 0]).all()
    assert scale.std() > 0.05 and boxes[:, 0].std() > 10  # spread over the range and over the image


def test_full_scale_crop_of_a_square_image_is_the_evaluation_view():
    images = [img for img in render(torch.arange(4) % 4, "photo", 24, torch.Generator().manual_seed(1))]
    augmented = BatchAugment(AugConfig(min_scale=1.0, hflip=False), 16)(images, torch.Generator())
    expected = decode_centre([encode_png(i).numpy().tobytes() for i in images], 16, CPU).float() / 255
    assert (augmented - expected).abs().max() <= 1 / 255 + 1e-6  # the same resize, in one place


def test_flips_are_per_image():
    image = render(torch.tensor([2]), "photo", 16, torch.Generator())[0]
    out = BatchAugment(AugConfig(min_scale=1.0, hflip=True), 16)([image] * 32, torch.Generator().manual_seed(0))
    flipped = [bool(torch.allclose(o, out[0].flip(-1))) and not torch.allclose(o, out[0]) for o in out]
    assert 4 < sum(flipped) < 28


def test_randaugment_draws_its_operations_per_image():
    image = render(torch.tensor([1]), "photo", 16, torch.Generator())
    batch = image.expand(24, -1, -1, -1).contiguous()
    out = randaugment(batch, 2, 15, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert len({hashlib.sha1(o.numpy().tobytes()).hexdigest() for o in out}) > 12
    assert torch.equal(out, randaugment(batch, 2, 15, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("which", ["mixup", "cutmix"])
def test_mixup_and_cutmix_mix_targets_as_much_as_pixels(which):
    images = torch.stack([torch.zeros(3, 20, 20), torch.ones(3, 20, 20)])
    targets = soft_targets(torch.tensor([0, 1]), 2, 0.0)
    aug = AugConfig(mixup_alpha=0.4 if which == "mixup" else 0.0, cutmix_alpha=1.0 if which == "cutmix" else 0.0)
    for seed in range(5):
        mixed, soft = mix(images, targets, aug, torch.Generator().manual_seed(seed))
        assert torch.allclose(soft.sum(1), torch.ones(2))
        assert math.isclose(mixed[0].mean().item(), soft[0, 1].item(), abs_tol=1e-5)  # share of image 1
        if which == "cutmix":
            assert set(mixed.unique().tolist()) <= {0.0, 1.0}


def test_both_mixes_on_use_each_for_some_batches():
    images, targets = torch.rand(4, 3, 8, 8), soft_targets(torch.arange(4), 4, 0.1)
    kinds = set()
    for seed in range(12):
        mixed, _ = mix(images, targets, AugConfig(mixup_alpha=0.5, cutmix_alpha=0.5), torch.Generator().manual_seed(seed))
        kinds.add("cutmix" if ((mixed == images) | (mixed == images.flip(0))).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_evaluation_cache_is_sliced_by_rank_and_kept_as_uint8(uneven_store):
    whole = load_eval_set(uneven_store, 16, CPU)
    assert whole.images.dtype == torch.uint8 and whole.images.shape == (53, 3, 16, 16)
    parts = [load_eval_set(uneven_store, 16, CPU, part=(r, 3)) for r in range(3)]
    assert sum(len(p) for p in parts) == 53
    assert torch.equal(parts[1].images, whole.images[1::3]) and torch.equal(parts[2].labels, whole.labels[2::3])
    rows = [0, 4, 5, 17, 52]  # across row groups and shards: only these are decoded
    chosen = load_eval_set(uneven_store, 16, CPU, rows=rows)
    assert torch.equal(chosen.images, whole.images[rows]) and torch.equal(chosen.labels, whole.labels[rows])


def test_split_features_stream_the_split_through_the_image_tower(uneven_store, pretrained_file):
    model = build_zeroshot_classifier(ModelConfig(pretrained=pretrained_file), CLASSES)
    whole = load_eval_set(uneven_store, model.image_size, CPU)
    features, labels = split_features(model, uneven_store, CPU, rows=range(0, 53, 2))
    assert torch.allclose(features, image_features(model, whole.images[::2], CPU), atol=1e-5)
    assert torch.equal(labels, whole.labels[::2])


def test_decode_batch_on_the_cpu_matches_pil():
    image = render(torch.tensor([0]), "photo", 20, torch.Generator())[0]
    blob = encode_jpeg(image, quality=90).numpy().tobytes()
    ours = decode_batch([blob], CPU)[0]
    pil = torch.from_numpy(np.array(Image.open(io.BytesIO(blob)).convert("RGB"))).permute(2, 0, 1)
    assert (ours.int() - pil.int()).abs().max() <= 2


def test_prefetch_raises_what_the_producer_raised():
    def make(i):
        if i == 2:
            raise ValueError("bad batch 2")
        return i

    it = prefetched(make, 5, depth=2)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match="bad batch 2"):
        next(it)
    assert list(prefetched(lambda i: i * i, 4, depth=1)) == [0, 1, 4, 9]

