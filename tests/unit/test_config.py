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
