"""The data path on CUDA gives what the CPU path gives: nvJPEG decoding, the training loader (its side stream,
crops, flips and RandAugment on the GPU) and the evaluation cache kept on the device."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg, encode_png

from tests.gpu import NEEDS_CUDA
from trainers.config import AugConfig, ModelConfig
from trainers.data.cache import load_eval_set
from trainers.data.decode import as_tensors, decode_batch
from trainers.data.loader import TrainLoader
from trainers.data.store import ShardWriter
from trainers.data.synthetic import CLASSES, render
from trainers.evaluate import predict
from trainers.metrics import top1
from trainers.model import build_zeroshot_classifier

pytestmark = [pytest.mark.gpu, NEEDS_CUDA]
CPU = torch.device("cpu")


def mixed_sizes(count: int, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """`count` photo-style images of three sizes (the store keeps each image's own size), with labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = [i % len(CLASSES) for i in range(count)]
    images = [image for size, part in ((20, labels[0::3]), (28, labels[1::3]), (36, labels[2::3]))
              for image in render(torch.tensor(part), "photo", size, gen)]
    return images, labels[0::3] + labels[1::3] + labels[2::3]


@pytest.fixture(scope="module")
def png_store(tmp_path_factory) -> str:
    """53 lossless (PNG) rows in uneven row groups over several shards: both devices decode the same pixels
    (nvJPEG refuses PNG, so CUDA decodes them on the CPU), so the loader's GPU work is all that differs."""
    images, labels = mixed_sizes(53, seed=3)
    path = tmp_path_factory.mktemp("png") / "train"
    out = ShardWriter(str(path), CLASSES, row_group_rows=5, shard_bytes=8000)
    for i, (image, label) in enumerate(zip(images, labels)):
        out.add(encode_png(image).numpy().tobytes(), label, f"generated:{i}", "")
    out.close()
    return str(path)


def test_the_loader_on_cuda_gives_the_cpu_batches_for_the_same_seed(cuda, png_store):
    aug = AugConfig(min_scale=0.3, hflip=True, randaug_n=2, randaug_m=9)
    on_gpu = list(TrainLoader(png_store, aug, 16, 8, seed=5, device=cuda).epoch(1))
    on_cpu = list(TrainLoader(png_store, aug, 16, 8, seed=5, device=CPU).epoch(1))
    torch.cuda.synchronize()
    assert len(on_gpu) == len(on_cpu) == 6
    for step, ((gpu_images, gpu_labels), (cpu_images, cpu_labels)) in enumerate(zip(on_gpu, on_cpu)):
        assert gpu_images.device.type == gpu_labels.device.type == "cuda"
        assert gpu_images.shape == cpu_images.shape == (8, 3, 16, 16)
        assert torch.equal(gpu_labels.cpu(), cpu_labels), step  # the same rows, in the same order
        # The same draws on the same pixels: only float rounding differs (roi_align, RandAugment's kernels),
        # which a threshold (posterize, solarize) can turn into a larger step for a few pixels.
        diff = (gpu_images.cpu() - cpu_images).abs() * 255
        assert diff.mean() < 0.5 and (diff > 1.5).float().mean() < 0.01, (step, diff.mean(), diff.max())


def photo_jpegs(count: int) -> list[bytes]:
    images, _ = mixed_sizes(count, seed=11)
    big = [torch.nn.functional.interpolate(i[None].float(), scale_factor=4, mode="bilinear")[0] for i in images]
    return [encode_jpeg(i.round().clamp(0, 255).to(torch.uint8), quality=90).numpy().tobytes() for i in big]


def test_nvjpeg_decodes_a_batch_as_pil_does_within_jpeg_tolerance(cuda):
    blobs = photo_jpegs(12)
    ours = decode_batch(blobs, cuda)
    direct = decode_jpeg(as_tensors(blobs), mode=ImageReadMode.RGB, device=cuda)  # raises if nvJPEG cannot
    assert all(torch.equal(o, d) for o, d in zip(ours, direct))  # our path is the batched nvJPEG call
    for blob, image in zip(blobs, ours):
        pil = torch.from_numpy(np.array(Image.open(io.BytesIO(blob)).convert("RGB"))).permute(2, 0, 1)
        assert image.device.type == "cuda" and image.shape == pil.shape
        diff = (image.cpu().int() - pil.int()).abs().float()
        # Decoders may differ in their inverse DCT and chroma upsampling: a level or two, more at sharp colour
        # edges. A decoding gone wrong (channels swapped, rows shifted) moves most pixels by far more.
        assert diff.mean() < 3 and (diff > 16).float().mean() < 0.05, (diff.mean(), (diff > 16).float().mean())


def test_the_evaluation_cache_lives_on_the_device_and_scores_as_on_the_cpu(cuda, demo_data, pretrained_file):
    path = demo_data["heldout"]
    on_gpu, on_cpu = load_eval_set(path, 32, cuda), load_eval_set(path, 32, CPU)
    assert on_gpu.images.device.type == on_gpu.labels.device.type == "cuda" and on_gpu.images.dtype == torch.uint8
    assert torch.equal(on_gpu.labels.cpu(), on_cpu.labels)
    assert (on_gpu.images.cpu().float() - on_cpu.images.float()).abs().mean() < 3  # nvJPEG vs libjpeg rounding
    part = load_eval_set(path, 32, cuda, part=(1, 3))
    assert torch.equal(part.images, on_gpu.images[1::3]) and torch.equal(part.labels, on_gpu.labels[1::3])
    model = build_zeroshot_classifier(ModelConfig(pretrained=pretrained_file), CLASSES)
    gpu_logits = predict(model.to(cuda), on_gpu.images, cuda)  # bf16 autocast: the GPU default
    cpu_logits = predict(model.to(CPU), on_cpu.images, CPU)
    assert gpu_logits.device.type == "cuda" and gpu_logits.dtype == torch.float32
    agree = (gpu_logits.argmax(-1).cpu() == cpu_logits.argmax(-1)).float().mean().item()
    gpu_top1, cpu_top1 = top1(gpu_logits, on_gpu.labels), top1(cpu_logits, on_cpu.labels)
    assert agree >= 0.95 and abs(gpu_top1 - cpu_top1) <= 3 / len(on_cpu), (agree, gpu_top1, cpu_top1)
