"""The pyfunc soup served as MLflow users serve models: `mlflow models serve` on 127.0.0.1, a real
HTTP request carrying a real PNG (base64 in JSON, as MLflow sends binary data), class and probabilities."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow.pyfunc
import pandas as pd
import pytest
import torch
from torchvision.io import encode_png

from soup.outputs.mlflow_model import save_pyfunc
from trainers.base import write_base_checkpoint
from trainers.checkpoint import load_checkpoint, read_meta
from trainers.config import TrainConfig
from trainers.data.decode import decode_centre
from trainers.data.synthetic import write_demo_data
from trainers.data.store import read_split
from trainers.evaluate import predict
from trainers.model import build_classifier


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(pyfunc model directory, the checkpoint's classifier and classes, PNG bytes of test images): a base
    checkpoint of the tiny model (random towers, zero-shot head) is a checkpoint like any soup's."""
    tmp = tmp_path_factory.mktemp("served")
    data = write_demo_data(tmp / "data", size=48, sizes={s: 4 for s in ("train", "val", "heldout", "test", "sketch")})
    cfg = TrainConfig.model_validate({"data": {**{s: data[s] for s in ("train", "val", "heldout", "test")}},
                                      "model": {"templates": "simple"}})
    write_base_checkpoint(cfg, tmp / "base")
    save_pyfunc(tmp / "base", tmp / "model", read_meta(tmp / "base"))
    loaded = load_checkpoint(tmp / "base")
    model = build_classifier(cfg.model, len(loaded.meta["classes"]))
    model.load_state_dict(loaded.state_dict)
    images = read_split(cfg.data.test, 48).images[:3]  # larger than the model's input: resized, cropped
    return tmp / "model", model.eval(), loaded.meta["classes"], [encode_png(i).numpy().tobytes() for i in images]


def expected(model, classes, pngs) -> tuple[list[str], torch.Tensor]:
    logits = predict(model, decode_centre(pngs, model.image_size, torch.device("cpu")), torch.device("cpu"), "fp32")
    probabilities = logits.softmax(-1)
    return [classes[i] for i in probabilities.argmax(-1).tolist()], probabilities


def test_pyfunc_takes_png_bytes_and_base64(served):
    path, model, classes, pngs = served
    pyfunc = mlflow.pyfunc.load_model(str(path))
    names, probabilities = expected(model, classes, pngs)
    for cells in (pngs, [base64.b64encode(p).decode() for p in pngs]):
        out = pyfunc.predict(pd.DataFrame({"image": cells}))
        assert out["class"].tolist() == names
        assert torch.allclose(torch.tensor(out["probabilities"].tolist()), probabilities, atol=1e-5)
    with pytest.raises(ValueError, match="not base64"):
        pyfunc.predict(pd.DataFrame({"image": ["not an image!"]}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_a_png_over_http(served, tmp_path):
    path, model, classes, pngs = served
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(path), "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=dict(os.environ),
                              stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, tmp_path / "server.log")
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(p).decode()] for p in pngs]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            rows = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, 15)  # the server and the workers it started
        server.wait(timeout=60)
    names, probabilities = expected(model, classes, pngs)
    assert [r["class"] for r in rows] == names
    assert torch.allclose(torch.tensor([r["probabilities"] for r in rows]), probabilities, atol=1e-5)


def wait_until_up(url: str, server: subprocess.Popen, log, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow models serve exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow models serve did not answer within {timeout} s: {log.read_text()[-2000:]}")
