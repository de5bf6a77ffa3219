"""`python -m soup.greedy --ingredients ...`: souping weight files trained elsewhere, without any sweep."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.pyfunc
import pytest
import torch
from mlflow.tracking import MlflowClient

from soup import greedy
from soup.inputs.explicit import explicit_ingredients
from soup.outputs.mlflow_model import TAG_INGREDIENTS, TAG_SOUP_RUN
from soup.inputs.records import KIND_SOUP, TAG_PARENT
from trainers.tracking import TAG_KIND
from soup.inputs.tensorfile import read_tensors
from tests.conftest import RunsAShell
from trainers.checkpoint import WEIGHTS, load_weights
from trainers.config import ModelConfig
from trainers.data.store import read_split
from trainers.errors import UserError
from trainers.evaluate import predict
from trainers.model import build_classifier


class Opaque:
    pass


@pytest.fixture(scope="module")
def weight_files(soup_inputs, tmp_path_factory):
    """Three good state dicts as another trainer saves them, and four bad files beside them."""
    _, base_dir, ingredients = soup_inputs
    out = tmp_path_factory.mktemp("elsewhere")
    for ingredient in ingredients:
        state = {f"module.{k}": v for k, v in load_weights(ingredient.checkpoint).items()}
        torch.save({"epoch": 2, "state_dict": state}, out / f"{ingredient.trial_id}.pt")
    shutil.copyfile(Path(base_dir) / WEIGHTS, out.parent / "zeroshot.safetensors")
    good = load_weights(ingredients[0].checkpoint)
    torch.save({**good, "head.weight": torch.zeros(5, good["head.weight"].shape[1])}, out / "mismatched.pt")
    (out / "corrupt.pt").write_bytes(b"\x80\x02garbage" * 20)
    torch.manual_seed(123)  # an image tower and head trained from another starting point
    torch.save(build_classifier(ModelConfig(), 4).state_dict(), out / "foreign.pt")
    torch.save({"state_dict": good, "hook": Opaque()}, out / "pickled.pt")
    return out


def test_soup_greedy_on_state_dict_files_without_a_sweep(weight_files, demo_data, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = greedy.main(["--ingredients", str(weight_files / "*.pt"), "--base", str(weight_files.parent / "zeroshot.safetensors"),
                        "--model", "soupsweep-tiny-vit", "--heldout", demo_data["heldout"], "--test", demo_data["test"],
                        "--shift", f"sketch={demo_data['sketch']}", "--tracking-uri", uri, "--experiment", "elsewhere",
                        "--device", "cpu", "--wiseft-alphas", "0,0.5,1", "--register-as", "tiny-soup"])
    out = capsys.readouterr().out
    assert code == 0
    for method in ("zeroshot", "best", "uniform", "greedy", "model_stock", "wiseft_greedy", "ensemble"):
        assert f"\n{method} " in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("elsewhere")
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()  # beside the database
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[TAG_KIND] == KIND_SOUP and TAG_PARENT not in run.data.tags
    skipped = json.loads(Path(client.download_artifacts(run.info.run_id, "left_out.json")).read_text())
    assert set(skipped) == {"mismatched", "corrupt", "foreign", "pickled"}
    assert "incompatible weights: head.weight shape (5, 32) != (4, 32)" in skipped["mismatched"]
    assert "not a readable PyTorch file" in skipped["corrupt"]
    assert skipped["foreign"].startswith("different initialisation: its image tower is")
    assert "holds code (tests.soup.test_explicit.Opaque)" in skipped["pickled"]
    assert run.data.params["ingredients"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"comparison.json", "comparison_wide.json", "comparison.parquet", "per_class.json", "greedy_trace.json",
            "greedy_ensemble_trace.json", "wiseft_greedy_curve.json", "model_stock_ratios.json", "figures",
            "soups", "model"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/id_vs_shift.png", "figures/wiseft_curve.png"}
    check_registered_model(client, run, demo_data)


def check_registered_model(client: MlflowClient, run, demo_data) -> None:
    """The registered soup: no pickle anywhere, lineage in its tags, and it predicts the greedy soup."""
    version = client.get_model_version("tiny-soup", "1")
    assert version.run_id == run.info.run_id and version.tags[TAG_SOUP_RUN] == run.info.run_id
    assert version.tags[TAG_INGREDIENTS] == run.data.params["greedy.members"]
    files = [a.path for a in _walk(client, run.info.run_id, "model")]
    assert any(p.endswith("model.safetensors") for p in files)
    assert not any(p.endswith((".pkl", ".pt", ".pth", ".bin", ".pickle")) for p in files), files
    soup = read_tensors(client.download_artifacts(run.info.run_id, "soups/greedy/model.safetensors"))
    test = read_split(demo_data["test"], 32)
    model = build_classifier(ModelConfig(), 4)
    model.load_state_dict(soup)
    expected = predict(model, test.images, torch.device("cpu"), "fp32")
    loaded = mlflow.pyfunc.load_model(version.source)
    assert torch.allclose(torch.as_tensor(loaded.predict(test.images.numpy())), expected, atol=1e-5)
    top1 = (expected.argmax(-1) == test.labels).float().mean().item()
    assert top1 == pytest.approx(run.data.metrics["greedy/test/top1"])


def _walk(client: MlflowClient, run_id: str, path: str):
    for item in client.list_artifacts(run_id, path):
        yield from (_walk(client, run_id, item.path) if item.is_dir else [item])


def test_without_a_base_the_first_ingredient_is_the_reference(weight_files, demo_data, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = greedy.main(["--ingredients", str(weight_files / "trial*.pt"), str(weight_files / "foreign.pt"),
                        "--model", "soupsweep-tiny-vit", "--heldout", demo_data["heldout"], "--test", demo_data["test"],
                        "--tracking-uri", uri, "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "\ngreedy " in out and "\nzeroshot " not in out and "\nwiseft" not in out
    assert "foreign (different initialisation: its image tower is" in out and "first ingredient (trial1)" in out


def test_explicit_mode_mistakes_are_one_line_errors(weight_files, demo_data, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = [
        (["--ingredients", str(tmp_path / "nothing-*.pt")], "matches nothing"),
        (["--ingredients", str(weight_files / "trial1.pt"), "--heldout", demo_data["heldout"],
          "--test", demo_data["test"]], "--model is needed"),
        (["--ingredients", str(weight_files / "trial1.pt"), "--model", "soupsweep-tiny-vit",
          "--heldout", demo_data["heldout"]], "--test needed"),
        (["--ingredients", str(weight_files / "trial1.pt"), "--model", "soupsweep-tiny-vit", "--methods", "wiseft",
          "--heldout", demo_data["heldout"], "--test", demo_data["test"]], "needs the shared initialisation"),
        (["--ingredients", str(weight_files / "trial1.pt"), "--shift", "sketch"], "use NAME=PATH"),
        (["--ingredients", str(weight_files / "trial1.pt"), "--register-method", "ensemble"], "only soups can be"),
        ([], "give --experiment"),
    ]
    for args, message in cases:
        assert greedy.main([*args, "--tracking-uri", uri, "--device", "cpu"]) == 2, args
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (args, errors)


def test_a_pickle_that_holds_code_is_refused_unread(demo_data, tmp_path, capsys):
    marker = tmp_path / "the-pickle-ran"
    shell = tmp_path / "shell.pt"
    torch.save({"head.weight": torch.zeros(4, 32), "hook": RunsAShell(marker)}, shell)
    code = greedy.main(["--ingredients", str(shell), "--base", str(shell), "--model", "soupsweep-tiny-vit",
                        "--heldout", demo_data["heldout"], "--test", demo_data["test"],
                        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--base: {shell} holds code (posix.system) besides tensors and was refused unread" in err
    assert not marker.exists()


def test_ingredient_names_come_from_the_files(tmp_path):
    for name in ("a/x.pt", "b/x.pt", "c/y.safetensors"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [i.trial_id for i in explicit_ingredients([str(tmp_path / "c/*")])] == ["y"]
    clashing = explicit_ingredients([str(tmp_path / "*/x.pt")])
    assert [i.trial_id for i in clashing] == [str(tmp_path / "a/x.pt"), str(tmp_path / "b/x.pt")]
    with pytest.raises(UserError, match="matches nothing"):
        explicit_ingredients([str(tmp_path / "none/*")])


def test_templates_flag_offers_what_the_config_accepts():
    import typing

    from soup.greedy import parse_args
    from trainers.config import ModelConfig

    accepted = typing.get_args(ModelConfig.model_fields["templates"].annotation)
    assert [parse_args(["--templates", name]).templates for name in accepted] == list(accepted)
