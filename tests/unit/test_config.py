from pathlib import Path

import pytest
import yaml
from cellbench.config import ConfigError, load_params


@pytest.fixture()
def params_dict(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_project_params_are_valid(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.run_datasets == ("synthetic",)
    assert set(params.run_models) >= {"classical", "unet"}
    assert params.model("unet").family == "unet"
    assert params.dataset("synthetic").source == "generate"


@pytest.mark.parametrize(
    ("edit", "messages"),
    [
        (lambda p: p["run"].update(models=["unett"]), ["run.models: 'unett'", "allowed: "]),
        (lambda p: p["models"]["unet"].update(epochs=-2), ["models.unet.epochs", "minimum 1"]),
        (lambda p: p.update(modles=p.pop("models")), ["'modles' (did you mean 'models'?)"]),
        (lambda p: p["models"]["unet"].update(epoch=3), ["models.unet: unknown key 'epoch'"]),
        (lambda p: p["models"]["unet"].update(family="unet2"), ["'unet2' is not a model family"]),
        (
            lambda p: p["datasets"]["synthetic"].update(kind="nope"),
            ["'nope' is not a dataset kind"],
        ),
        (lambda p: p["models"]["unet"].update(attention="cbam"), ["allowed values: none, scse"]),
    ],
)
def test_invalid_params_name_key_and_allowed_values(tmp_path, params_dict, edit, messages) -> None:
    edit(params_dict)
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, params_dict))
    for message in messages:
        assert message in str(err.value)
    assert "params.yaml" in str(err.value)


def test_unknown_lookup_suggests(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(ConfigError, match="Did you mean 'unet'"):
        params.model("unte")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "nope.yaml")


def test_run_options_default_to_the_main_run_only(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.train_sizes == () and not params.cross and not params.union
    assert params.curve_datasets == ()
    assert params.run_seeds == (params.seed,)
    assert params.training_sets() == params.run_datasets


def test_learning_curve_and_cross_keys_are_typed(tmp_path, params_dict) -> None:
    params_dict["datasets"]["other"] = dict(params_dict["datasets"]["synthetic"])
    params_dict["run"].update(
        datasets=["synthetic", "other"], train_sizes=[30, 100, "all"], seeds=[1, 2, 3]
    )
    params_dict["run"].update(cross=True, union=True)
    params = load_params(write(tmp_path, params_dict))
    assert params.train_sizes == (30, 100, "all") and params.run_seeds == (1, 2, 3)
    assert params.curve_datasets == ("synthetic", "other")  # default: every run dataset
    assert params.cross and params.union
    assert params.training_sets() == ("synthetic", "other", "union")
    params.check_training_set("union")  # a training set, though not a dataset key
    with pytest.raises(ConfigError, match="unknown dataset 'unoin'"):
        params.check_training_set("unoin")


def test_curve_datasets_limit_the_learning_curves(tmp_path, params_dict) -> None:
    params_dict["datasets"]["other"] = dict(params_dict["datasets"]["synthetic"])
    params_dict["run"].update(
        datasets=["synthetic", "other"], train_sizes=[5, "all"], curve_datasets=["other"]
    )
    assert load_params(write(tmp_path, params_dict)).curve_datasets == ("other",)
    params_dict["run"]["curve_datasets"] = ["other", "synthetic"]  # run.datasets order
    assert load_params(write(tmp_path, params_dict)).curve_datasets == ("synthetic", "other")


@pytest.mark.parametrize(
    ("run", "messages"),
    [
        ({"train_sizes": [0, "all"]}, ["run.train_sizes.0", "positive whole numbers"]),
        ({"train_sizes": ["al"]}, ["run.train_sizes.0", "'all'"]),
        ({"train_sizes": [30, 30]}, ["run.train_sizes", "each once"]),
        ({"train_sizes": 30}, ["run.train_sizes", "e.g. 'train_sizes: [30, 100, 300, all]'"]),
        ({"seeds": [-1]}, ["run.seeds.0", "whole numbers >= 0"]),
        ({"seeds": []}, ["run.seeds", "leave 'seeds' out"]),
        ({"cross": "yes"}, ["run.cross", "'yes' is not of type 'boolean'"]),
        ({"union": True}, ["run.union", "two or more datasets", "union: false"]),
        ({"crosss": True}, ["unknown key 'crosss' (did you mean 'cross'?)"]),
        (
            {"train_sizes": [5], "curve_datasets": ["dsb"]},
            ["run.curve_datasets: 'dsb' is not in run.datasets", "synthetic"],
        ),
        ({"curve_datasets": ["synthetic"]}, ["no learning curves without run.train_sizes"]),
        ({"train_sizes": [5], "curve_datasets": []}, ["run.curve_datasets"]),
    ],
)
def test_invalid_run_keys_name_the_key_and_the_fix(tmp_path, params_dict, run, messages) -> None:
    params_dict["run"].update(run)
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, params_dict))
    for message in messages:
        assert message in str(err.value)


def test_union_may_not_shadow_a_dataset(tmp_path, params_dict) -> None:
    params_dict["datasets"]["union"] = dict(params_dict["datasets"]["synthetic"])
    params_dict["run"].update(datasets=["synthetic", "union"], union=True)
    with pytest.raises(ConfigError, match="'union' names the union training set"):
        load_params(write(tmp_path, params_dict))
