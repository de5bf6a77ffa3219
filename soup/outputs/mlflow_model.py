"""The soup as an MLflow model, registered under a name the user gives.

A pyfunc model "from code": MLflow stores the few lines of `soup/outputs/pyfunc_model.py` and, as the
model's only artifact, our checkpoint directory (model.safetensors + meta.json). Nothing is pickled:
neither the weights nor the Python object. Loading it needs soupsweep installed (it rebuilds the
classifier from meta.json). The model version's tags and the soup's meta.json name the ingredient
runs (lineage), and its run is the soup run.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from soup.outputs.serving import class_predictions, encoded_images, uint8_images

from trainers.checkpoint import META, load_checkpoint
from trainers.config import TrainConfig
from trainers.evaluate import predict
from trainers.model import build_classifier

log = logging.getLogger(__name__)
MODEL_ARTIFACT = "model"
CODE = Path(__file__).with_name("pyfunc_model.py")
TAG_INGREDIENT_RUNS = "soupsweep.ingredient_runs"
TAG_INGREDIENTS = "soupsweep.ingredients"
TAG_SOUP_RUN = "soupsweep.soup_run"
TAG_REGISTERED = "soupsweep.registered_model"


class SoupModel(mlflow.pyfunc.PythonModel):
    """For a DataFrame of encoded images (soup/outputs/serving.py): class name and probabilities per row;
    for uint8 images (N, 3, S, S) at the model's input size: the soup's logits."""

    def load_context(self, context) -> None:
        checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        cfg = TrainConfig.model_validate(checkpoint.meta["config"])
        self.classes = checkpoint.meta["classes"]
        self.precision = cfg.precision
        self.model = build_classifier(cfg.model, len(self.classes))
        self.model.load_state_dict(checkpoint.state_dict)
        self.model.eval()

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            images = encoded_images(model_input, self.model.image_size)
            return class_predictions(predict(self.model, images, torch.device("cpu"), self.precision), self.classes)
        return predict(self.model, uint8_images(model_input), torch.device("cpu"), self.precision).numpy()


def save_pyfunc(checkpoint: Path, path: Path, meta: dict) -> None:
    """The pyfunc model of a checkpoint directory. No signature: it takes two kinds of input (a
    DataFrame of encoded images, or uint8 tensors), which one MLflow signature cannot describe."""
    mlflow.pyfunc.save_model(
        path, python_model=str(CODE), artifacts={"checkpoint": str(checkpoint)},
        pip_requirements=["soupsweep", "torch", "open_clip_torch", "safetensors"],  # skip inference
        metadata={"soup_method": meta.get("method"), "lineage": meta.get("lineage", {})})


def register_soup(client: MlflowClient, run_id: str, checkpoint: Path, name: str) -> str:
    """Log `checkpoint` as a pyfunc model in the soup run and register it; returns 'name/version'."""
    meta = json.loads((checkpoint / META).read_text())
    lineage = meta.get("lineage", {})
    with tempfile.TemporaryDirectory(prefix="soupsweep-model-") as tmp:
        save_pyfunc(checkpoint, Path(tmp) / MODEL_ARTIFACT, meta)
        client.log_artifacts(run_id, str(Path(tmp) / MODEL_ARTIFACT), MODEL_ARTIFACT)
    try:
        client.create_registered_model(name, description="model soups made by soupsweep")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    members = meta.get("members", list(lineage))  # in the order they were added (meta.json sorts keys)
    tags = {TAG_INGREDIENT_RUNS: ",".join(lineage.get(m, "") for m in members)[:5000],
            TAG_INGREDIENTS: ",".join(members)[:5000], TAG_SOUP_RUN: run_id,
            "soup_method": str(meta.get("method"))}
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    version = client.create_model_version(name, source, run_id, tags=tags,
                                          description=f"{meta.get('method')} soup of {len(members)} ingredients")
    registered = f"{name}/{version.version}"
    client.set_tag(run_id, TAG_REGISTERED, registered)
    log.info("registered the %s soup as %s", meta.get("method"), registered)
    return registered
