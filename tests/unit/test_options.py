"""The typed option contract: one home per default, schema generated from the classes."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from cellbench.config import ReportOptions, ScoreOptions, SplitOptions, load_params
from cellbench.contract import build_schema, check_params, check_schema_file, load_checked
from cellbench.datasets import DATASET_KINDS
from cellbench.errors import ConfigError
from cellbench.models import MODEL_FAMILIES
from cellbench.options import Options

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "cellbench"

#: modules that declare options classes: the only places a default may be written.
OPTION_MODULES = {"options.py", "models/options.py", "datasets/options.py", "config.py"}

#: parameters / keys that share a name with an option but mean something else.
SAME_NAME_OTHER_MEANING = {
    ("metrics.py", "annotation"): "per-image annotation level of a scored image",
    ("datasets/base.py", "annotation"): "ConvertedWriter.add: the level of one image",
    ("datasets/base.py", "cell_type"): "ConvertedWriter.add: the cell type of one image",
    ("postprocess/watershed.py", "min_size"): "clean_labels: 0 = keep every instance",
    ("transforms.py", "in_channels"): "to_model_input: channel count of a call",
    ("train.py", "target"): "Sample.target: the training target array of one image",
    ("models/maskrcnn.py", "target"): "torchvision's transform API: resize(image, target)",
    ("train.py", "annotation"): "Sample.annotation: the level of one image",
    ("report/render.py", "width"): "chart size in px",
    ("report/render.py", "height"): "chart size in px",
    ("report/render.py", "n_images"): "count read from a scores summary.json",
    ("report/render.py", "annotation"): "a per_image.csv column",
}


def all_option_classes() -> list[type[Options]]:
    classes = [SplitOptions, ScoreOptions, ReportOptions]
    classes += [e.options for e in MODEL_FAMILIES.values()]
    classes += [e.thresholds for e in MODEL_FAMILIES.values()]
    classes += [e.options for e in DATASET_KINDS.values()]
    return classes


def option_names() -> set[str]:
    return {name for cls in all_option_classes() for name in cls.model_fields}


def _literal(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is not None or True
    if isinstance(node, ast.Tuple | ast.List):
        return all(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    return False


def default_sites() -> list[str]:
    """Every place outside the options classes that writes a literal default for an option."""
    names = option_names()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in OPTION_MODULES:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            sites: list[tuple[str, ast.AST | None, int]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                for arg, default in zip(
                    positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
                ):
                    sites.append((arg.arg, default, node.lineno))
                for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                    if default is not None:
                        sites.append((arg.arg, default, node.lineno))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "get" and len(node.args) == 2:
                    key = node.args[0]
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        sites.append((key.value, node.args[1], node.lineno))
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        sites.append((stmt.target.id, stmt.value, stmt.lineno))
            for name, default, line in sites:
                other_meaning = (rel, name) in SAME_NAME_OTHER_MEANING
                if name in names and _literal(default) and not other_meaning:
                    found.append(f"{rel}:{line}: default for option '{name}'")
    return found


def test_no_option_default_outside_the_options_classes() -> None:
    assert default_sites() == []


def test_the_scan_finds_a_planted_default(tmp_path: Path, monkeypatch) -> None:
    # the scan itself must be able to fail: plant each kind of duplicate and find it
    pkg = tmp_path / "cellbench"
    pkg.mkdir()
    (pkg / "planted.py").write_text(
        textwrap.dedent(
            """
            def f(x, *, seed_threshold=0.6): ...
            def g(cfg): return cfg.get("samples_per_epoch", 256)
            class S:
                learning_rate: float = 2e-3
            """
        )
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    found = default_sites()
    assert len(found) == 3
    assert {f.split("'")[1] for f in found} == {
        "seed_threshold",
        "samples_per_epoch",
        "learning_rate",
    }


def test_schema_file_is_generated_from_the_classes() -> None:
    assert check_schema_file() is None


@pytest.mark.parametrize(
    "what",
    [("model", k) for k in MODEL_FAMILIES] + [("dataset", k) for k in DATASET_KINDS],
    ids=lambda w: f"{w[0]}-{w[1]}",
)
def test_schema_agrees_with_each_class_option_by_option(what) -> None:
    schema = build_schema()["$defs"][what[0]]["allOf"]
    key, field = ("family", None) if what[0] == "model" else ("kind", "options")
    rule = next(r for r in schema if r["if"]["properties"].get(key, {}).get("const") == what[1])
    props = rule["then"]["properties"]
    if field:
        props = props[field]["properties"]
    registry = MODEL_FAMILIES if what[0] == "model" else DATASET_KINDS
    cls = registry[what[1]].options
    assert set(props) - {"family"} == set(cls.model_fields)
    defaults = (
        cls.model_construct().resolved() if not cls.model_json_schema().get("required") else {}
    )
    for name, info in cls.model_fields.items():
        assert props[name].get("description") == info.description, name
        if not info.is_required():
            assert props[name]["default"] == defaults.get(name, props[name]["default"]), name


def test_params_yaml_lists_every_option_of_its_models(repo_root: Path) -> None:
    # DVC tracks params.yaml sections, not code defaults: the committed file is complete
    params = load_params(repo_root / "params.yaml")
    for name, cfg in params.models.items():
        missing = set(MODEL_FAMILIES[cfg.family].options.model_fields) - set(cfg.options)
        assert not missing, f"models.{name} lacks {sorted(missing)}"


def test_encoder_list_matches_installed_smp() -> None:
    import segmentation_models_pytorch as smp
    from cellbench.models.encoders import SMP_ENCODERS

    assert tuple(smp.encoders.get_encoder_names()) == SMP_ENCODERS, (
        "regenerate cellbench/models/encoders.py with `python -m cellbench.models.encoders`"
    )


def _params(repo_root: Path, tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: p["models"]["unet"].update(encoder="resnet81"),
            "models.unet.encoder: 'resnet81' is not allowed (did you mean 'resnet18'",
        ),
        (
            lambda p: p["models"]["flow"].update(cellprob_threshold=[1.5]),
            "models.flow.cellprob_threshold.0: 1.5 is out of range (maximum 1)",
        ),
        (
            lambda p: p["models"]["unet"].update(patch_size=100),
            "models.unet.patch_size: 100 is not a multiple of 32",
        ),
        (
            lambda p: p["datasets"]["synthetic"]["options"].update(noise=0),
            "datasets.synthetic.options.noise: 0 is out of range (exclusiveMinimum 0)",
        ),
        (
            lambda p: p["datasets"].update(mine={"kind": "folder", "source": "local"}),
            "datasets.mine: 'path' is a required property",
        ),
        (
            lambda p: p["datasets"].update(h={"kind": "ctc", "options": {"truth": "GT"}}),
            "datasets.h.options: 'name' is a required property",
        ),
    ],
)
def test_schema_names_key_range_and_fix(repo_root, tmp_path, edit, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_checked(_params(repo_root, tmp_path, edit))
    assert message in str(err.value)


def test_registry_checks_what_the_schema_cannot(repo_root, tmp_path) -> None:
    path = _params(
        repo_root,
        tmp_path,
        lambda p: p["models"]["unet"].update(encoder_depth=5, decoder_channels=[16, 16, 16]),
    )
    params = load_params(path)  # the schema alone accepts it
    with pytest.raises(ConfigError, match="models.unet: .*decoder_channels has 3 entries"):
        check_params(params)


def test_tu_encoders_are_checked_against_timm_by_validate(repo_root, tmp_path) -> None:
    path = _params(repo_root, tmp_path, lambda p: p["models"]["unet"].update(encoder="tu-resnt18"))
    load_checked(path)  # parse time: the tu- form is accepted without importing timm
    with pytest.raises(ConfigError, match="timm has no model 'resnt18'. Did you mean tu-resnet18"):
        load_checked(path, timm=True)


def test_parsing_the_config_imports_no_torch(repo_root: Path) -> None:
    # what the Snakefile runs at parse time, in a fresh interpreter
    code = textwrap.dedent(
        f"""
        import sys
        from cellbench.contract import load_checked
        load_checked({str(repo_root / "params.yaml")!r})
        heavy = sorted(m for m in ("torch", "skimage", "segmentation_models_pytorch") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_options_cli_prints_every_option(capsys) -> None:
    from cellbench.cli import main

    for name in (*MODEL_FAMILIES, *DATASET_KINDS):
        assert main(["options", name]) == 0
        text = capsys.readouterr().out
        entry = MODEL_FAMILIES.get(name) or DATASET_KINDS[name]
        for field, info in entry.options.model_fields.items():
            assert field in text and info.description in text
    assert main(["options", "unet", "--format", "yaml"]) == 0
    entry = yaml.safe_load(capsys.readouterr().out)
    assert entry == MODEL_FAMILIES["unet"].options().resolved()
    assert main(["options", "untt"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err


def test_model_folder_describes_itself(tmp_path: Path) -> None:
    from cellbench.config import ModelConfig
    from cellbench.modelfolder import load_model, params_hash
    from cellbench.models import get_family
    from cellbench.models.options import ClassicalOptions

    family = get_family(ModelConfig("c", "classical", {"smooth": 2.0}))
    assert family.options == ClassicalOptions(smooth=2.0)
    section = {"seed": 1, "model": {"family": "classical", "smooth": 2.0}}
    assert params_hash(section) == params_hash(dict(reversed(list(section.items()))))
    assert len(params_hash(section)) == 64
    # a folder's options are read from it alone; an unknown option there names the file
    import json

    folder = tmp_path / "m"
    folder.mkdir()
    config = {"model": "c", "family": "classical", "options": {"smoth": 1.0}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "thresholds.json").write_text(json.dumps({"selected": {}}))
    with pytest.raises(
        ConfigError,
        match=r"config.json is invalid:\n  - options: unknown key 'smoth' \(did you mean 'smooth'\?\)",
    ):
        load_model(folder, "cpu")


def test_maskrcnn_refuses_tta_with_the_reason() -> None:
    from cellbench.errors import ConfigError
    from cellbench.models.options import MaskRCNNOptions

    with pytest.raises(ConfigError, match="detections cannot be averaged"):
        MaskRCNNOptions.from_mapping({"tta": True}, "models.maskrcnn", "params.yaml")
    assert MaskRCNNOptions().tta is False


def test_diameter_starts_need_a_measuring_pass() -> None:
    from cellbench.errors import ConfigError
    from cellbench.models.options import NetworkOptions

    with pytest.raises(ConfigError, match="makes no measuring pass: set diameter_passes to 2"):
        NetworkOptions.from_mapping(
            {"diameter": 30, "diameter_starts": [1, 2, 3], "diameter_passes": 1},
            "models.flow",
            "params.yaml",
        )
    ok = NetworkOptions.from_mapping(
        {
            "diameter": 30,
            "diameter_starts": [1, 2, 3],
            "size_estimate": "segmentation",
            "diameter_passes": 1,
        },
        "models.flow",
        "params.yaml",
    )
    assert ok.diameter_starts == (1.0, 2.0, 3.0)
    assert NetworkOptions().diameter_starts == (1.0,)
