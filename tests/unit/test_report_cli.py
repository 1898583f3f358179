"""The CLI's error handling, and the report's charts and tables."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from cellbench.cli import main


def test_cli_bad_params_exit_2_with_message(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nrun: {datasets: [x], models: [y]}\n")
    assert main(["validate", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cellbench validate: error:" in err and "'datasets' is a required property" in err


def test_cli_unknown_dataset(repo_root: Path, capsys) -> None:
    code = main(["split", "--params", str(repo_root / "params.yaml"), "--dataset", "syntetic"])
    assert code == 2
    assert "unknown dataset 'syntetic'" in capsys.readouterr().err


def test_console_script_installed() -> None:
    exe = Path(sys.executable).parent / "cellbench"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for stage in (
        "download",
        "convert",
        "split",
        "train",
        "predict",
        "postprocess",
        "score",
        "report",
        "segment",
    ):
        assert stage in out


def test_report_cli_has_assets_option(capsys) -> None:
    from cellbench.cli import build_parser

    args = build_parser().parse_args(["report", "--assets", "results/report"])
    assert args.assets == "results/report" and args.out == "results/report.html"


def test_metric_curves_svg_one_line_per_model_plain_and_self_contained() -> None:
    import re

    from cellbench.report.charts import metric_curves_svg

    x = [0.5, 0.75, 0.95]
    curves = {
        "a$1$": {"ap": (x, [0.9, 0.5, 0.1]), "f1": (x, [0.9, 0.6, np.nan])},
        "<b>": {"ap": (x, [0.8, 0.4, 0.0]), "f1": (x, [0.8, 0.5, 0.1])},
    }
    svg = metric_curves_svg(curves, [("ap", "AP"), ("f1", "F1")], "d0-curves")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count('id="cd0-curves-line2d_') >= 4  # two models x two panels
    assert "a$1$" in svg and "&lt;b&gt;" in svg and "<b>" not in svg  # text, escaped
    assert "<metadata>" not in svg and "<?xml" not in svg
    # every id is prefixed (several charts share a page), every reference points inside
    ids = set(re.findall(r'id="([^"]+)"', svg))
    assert all(i.startswith("cd0-curves-") for i in ids)
    assert set(re.findall(r"url\(#([^)]+)\)", svg)) <= ids
    assert not re.search(r'href="(?!#)', svg)
    # same input, same SVG
    assert metric_curves_svg(curves, [("ap", "AP"), ("f1", "F1")], "d0-curves") == svg


def test_training_and_dataset_svgs() -> None:
    from cellbench.report.charts import dataset_svg, training_svg

    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.0, 0.8, 0.6],
            "val_loss": [1.2, 0.9, np.nan],
            "val_mean_ap": [np.nan, np.nan, 0.5],
        }
    )
    svg = training_svg({"unet": history}, "t")
    assert "unet (train)" in svg and "unet (val)" in svg and "validation mean AP" in svg
    empty = training_svg({"unet": history.assign(val_mean_ap=np.nan)}, "t2")
    assert "not computed during training" in empty
    data = dataset_svg([3, 5, 8], np.array([40, 80, 120, 600, 900]), "d")
    assert "objects per image" in data and "object area" in data
    assert "mathdefault" not in data and "$" not in data  # log ticks as plain numbers


def test_size_rows_compare_estimated_and_true_diameters() -> None:
    from cellbench.report.collect import ModelRun
    from cellbench.report.tables import size_rows

    per_image = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "true_diameter": [10.0, 20.0, 40.0],
            "estimated_diameter": [11.0, 20.0, 60.0],
        }
    )
    config = {"options": {"diameter": 30.0}}
    sized = ModelRun("d", "unet_size", "unet", {}, per_image, config=config)
    plain = ModelRun("d", "unet", "unet", {}, per_image.drop(columns="estimated_diameter"))
    rows = size_rows([sized, plain])
    assert [r["model"] for r in rows] == ["unet_size"]
    r = rows[0]
    assert (r["standard"], r["n"], r["true"], r["estimated"]) == (30.0, 3, 20.0, 20.0)
    assert r["ratio"] == 1.1 and round(r["within"], 2) == 0.67  # medians, 2 of 3 within 20 %
    assert r["regressed_ratio"] is None and r["method"].startswith("segmented passes")
    assert size_rows([plain]) == []
    # with a size model, its first estimate is compared too
    regressed = per_image.assign(regressed_diameter=[5.0, 10.0, 20.0])
    r = size_rows([ModelRun("d", "u", "unet", {}, regressed, config=config)])[0]
    assert r["regressed_ratio"] == 0.5 and r["method"].startswith("size model")
    assert "first pass" not in r["method"]
    starts = {"options": {"diameter": 30.0, "diameter_passes": 2, "diameter_starts": [1, 2, 3]}}
    r = size_rows([ModelRun("d", "u", "unet", {}, regressed, config=starts)])[0]
    assert r["method"] == (
        "size model + segmented passes (at most 2), first pass from 1x / 2x / 3x the estimate"
    )


def test_number_formats() -> None:
    from cellbench.report.render import format_bytes, format_number, format_seconds

    assert format_number(None) == format_number(float("nan")) == "–"
    assert format_number(0.71234) == "0.712" and format_number(3) == "3"
    assert format_seconds(0.0123) == "0.0123" and format_seconds(12.345) == "12.35"
    assert format_bytes(1.5e9) == "1.50 GB" and format_bytes(None) == "–"


def test_cost_table_names_the_training_arithmetic() -> None:
    from cellbench.report.collect import ModelRun
    from cellbench.report.tables import cost_rows

    per_image = pd.DataFrame({"id": ["a"], "mean_ap": [0.5]})
    configs = [
        {"device": "cpu", "precision": "bf16", "train_seconds": 10.0},
        {"device": "cuda", "precision": "fp32"},
        {"device": "cpu", "precision": None},  # classical
        {"device": "cpu"},  # a folder written before precision was recorded
        {},
    ]
    runs = [ModelRun("d", f"m{i}", "unet", {}, per_image, config=c) for i, c in enumerate(configs)]
    assert [r["train_device"] for r in cost_rows(runs)] == [
        "cpu (bf16)",
        "cuda (fp32)",
        "cpu",
        "cpu",
        None,
    ]
