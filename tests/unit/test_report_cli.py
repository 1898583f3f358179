"""The CLI's error handling and the report renderer."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from cellbench.cli import main
from cellbench.report.render import ap_curve_svg, overlay_png


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


def test_overlay_png_crops_large_images() -> None:
    import base64
    import io

    from PIL import Image

    truth = np.zeros((900, 700), np.int32)
    truth[600:650, 100:150] = 1
    uri = overlay_png(np.random.default_rng(0).random((900, 700)), truth, truth, max_size=256)
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert png.size == (256 * 3 + 8, 256)


def test_ap_curve_svg_has_one_line_per_model() -> None:
    import pandas as pd
    from cellbench.report.render import ModelResult

    summary = {"per_image_mean": {f"ap@{t:.2f}": 1 - t for t in np.arange(0.5, 0.96, 0.05)}}
    results = [ModelResult("d", m, "unet", summary, pd.DataFrame()) for m in ("a", "b")]
    svg = ap_curve_svg(results)
    assert svg.count("<polyline") == 2 and svg.startswith("<svg")


def test_size_table_compares_estimated_and_true_diameters() -> None:
    import pandas as pd
    from cellbench.report.render import ModelResult, _size_table

    per_image = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "true_diameter": [10.0, 20.0, 40.0],
            "estimated_diameter": [11.0, 20.0, 60.0],
        }
    )
    config = {"options": {"diameter": 30.0}}
    sized = ModelResult("d", "unet_size", "unet", {}, per_image, config=config)
    plain = ModelResult("d", "unet", "unet", {}, per_image.drop(columns="estimated_diameter"))
    html = _size_table([sized, plain])
    assert "unet_size" in html and ">unet<" not in html
    assert (
        "<td>20.0</td><td>20.0</td><td>1.10</td><td>0.67</td>" in html
    )  # medians, 2 of 3 within 20 %
    assert _size_table([plain]) == ""
