"""One schema: YAML -> config -> Tune overrides -> worker payload -> meta.json -> MLflow params."""
from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.entities import Param

from sweep.config import SweepConfig
from sweep.space import param_space
from tests.conftest import data_section
from trainers.checkpoint import read_meta, save_checkpoint
from trainers.config import TrainConfig, validate
from trainers.errors import UserError

YAML = """
model: {name: soupsweep-tiny-vit}
optim: {lr: 0.0003, epochs: 2}
aug: {mixup_alpha: 0.2}
search:
  num_samples: 2
  space:
    optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
    optim.weight_decay: {uniform: [0.0, 0.3]}
    aug.randaug_n: {randint: [0, 2]}
    method.name: {choice: [ft, carft]}
"""


def test_round_trip_keeps_the_config_equal(demo_data, tmp_path):
    tree = yaml.safe_load(YAML) | {"data": data_section(demo_data)}
    tree["data"]["shift"]["imagenet-v2.1"] = tree["data"]["shift"]["sketch"]  # names of the user's: dots kept
    tree["model"] |= {"class_names": {"st.bernard": "St. Bernard"}, "class_descriptions": {"v1.0": ["a dog"]}}
    sweep_cfg = validate(SweepConfig, tree)
    overrides = {key: domain.sample() for key, domain in param_space(sweep_cfg.search).items()}
    trial_cfg = sweep_cfg.train_config().with_overrides(overrides)
    for key, value in overrides.items():
        assert trial_cfg.to_flat()[key] == value

    payload = json.loads(json.dumps({"config": trial_cfg.model_dump(mode="json")}))  # what Ray ships
    from_payload = TrainConfig.model_validate(payload["config"])
    save_checkpoint(tmp_path / "ckpt", {}, {"config": from_payload.model_dump(mode="json")})
    from_meta = TrainConfig.model_validate(read_meta(tmp_path / "ckpt")["config"])

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("round-trip"))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in from_meta.to_params().items()])
    from_mlflow = TrainConfig.from_params(client.get_run(run.info.run_id).data.params)
    client.set_terminated(run.info.run_id)

    assert from_payload == from_meta == from_mlflow == trial_cfg
    assert set(from_mlflow.data.shift) == {"sketch", "imagenet-v2.1"}
    assert from_mlflow.optim.lr == overrides["optim.lr"]


@pytest.mark.parametrize("tree, expected", [
    ({"optim": {"lrr": 1}}, "optim.lrr: unknown key (allowed here: accumulation_steps, batch_size, ema_decay, epochs"),
    ({"optim": {"epochs": "many"}}, "optim.epochs: Input should be a valid integer"),
    ({"optim": {"lr": 0}}, "optim.lr: Input should be greater than 0"),
    ({"optim": {"lr": -1e-5}}, "optim.lr: Input should be greater than 0"),
    ({"modle": {}}, "modle: unknown key (allowed here: anytime, aug, baselines, data, method, mlflow, model"),
    ({"search": {"space": {"optim.lx": {"uniform": [0, 1]}}}}, "'optim.lx' is not a training config key"),
    ({"search": {"space": {"optim.lr": {"uniform": [-1, 1]}}}}, "search.space.optim.lr: value -1.0 is invalid"),
    ({"search": {"space": {"optim.lr": {"loguniform": [0, 1]}}}}, "loguniform needs low > 0"),
    ({"search": {"space": {"method.init": {"choice": ["zeroshot", "lp"]}}}},
     "'method.init' fixes the initialisation every trial shares"),
    ({"search": {"space": {"model.templates": {"choice": ["openai-7", "simple"]}}}},
     "'model.templates' fixes the initialisation every trial shares"),
    ({"search": {"space": {"seed": {"uniform": [0, 1], "choice": [1]}}}}, "give exactly one of"),
    ({"search": {"algorithm": "grid-ish"}}, "search.algorithm: Input should be 'random', 'optuna' or 'grid'"),
    ({"soup": {"methods": ["greedy", "magic"]}}, "unknown soup methods ['magic']"),
])
def test_invalid_configs_name_the_key_and_the_fix(tree, expected):
    with pytest.raises(UserError) as err:
        validate(SweepConfig, tree)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = validate(SweepConfig, {"data": {"train": "x/train.parquet"}, "storage_path": "results",
                                 "mlflow": {"tracking_uri": "sqlite:///m.db"}})
    assert cfg.data.train == str(tmp_path / "x" / "train.parquet")
    assert cfg.storage_path == str(tmp_path / "results")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'm.db'}"
