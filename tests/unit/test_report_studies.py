"""The report's learning curves and cross-dataset matrix, from small fabricated score files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellbench.config import params_from_mapping
from cellbench.io import write_json
from cellbench.report import charts, tables
from cellbench.report.collect import CrossRun, CurveRun
from cellbench.skip import write_skipped
from cellbench.studies import CurvePlan, cross_dirs, curve_dirs, curve_plan_path, write_curve_plan
from test_report_render import make_fake_results, parse

IDS = ("i1", "i2", "i3", "i4")
MODELS = (("net", "unet"), ("plain", "classical"))


def per_image(values, ids=IDS) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "cell_type": "nuc", "mean_ap": list(values)})


def write_scores(folder: Path, values) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per_image(values).to_csv(folder / "per_image.csv", index=False)
    write_json(folder / "summary.json", {"n_images": len(values)})


def curve_point(model, n_train, seed, values, size=None, reason=None) -> CurveRun:
    return CurveRun(
        "ds",
        model,
        "unet",
        size or str(n_train),
        n_train,
        seed,
        {},
        per_image(values) if reason is None else pd.DataFrame(columns=["id"]),
        reason,
    )


def test_learning_curve_rows_average_seeds_then_bootstrap_images() -> None:
    points = [
        curve_point("net", 3, 1, [0.2, 0.4, 0.6, 0.8]),
        curve_point("net", 3, 2, [0.4, 0.6, 0.8, 1.0]),
        curve_point("net", 10, 1, [0.9, 0.9, 0.9, 0.9], size="all"),
        curve_point("net", 10, 2, [0.7, 0.7, 0.7, 0.7], size="all"),
        curve_point("gone", 3, 1, [], reason="no time"),
    ]
    rows = tables.learning_curve(points, "mean_ap", seed=0, models=["net", "gone"])
    assert [(r["model"], r["n_train"], r["size"]) for r in rows] == [
        ("net", 3, "3"),
        ("net", 10, "all"),
    ]
    small, full = rows
    assert small["seeds"] == 2 and small["seed_list"] == [1, 2]
    assert small["mean"] == pytest.approx(0.6)  # seeds' means 0.5 and 0.7
    assert small["seed_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (small["seed_min"], small["seed_max"]) == pytest.approx((0.5, 0.7))
    # the interval: over images of the seed-averaged scores 0.3, 0.5, 0.7, 0.9
    assert small["interval"].n == 4 and small["interval"].mean == pytest.approx(0.6)
    assert 0.3 <= small["interval"].low < 0.6 < small["interval"].high <= 0.9
    # the same score on every image: no spread over images, only over seeds
    assert full["interval"].low == full["interval"].high == pytest.approx(0.8)
    assert full["seed_min"] == pytest.approx(0.7) and full["seed_max"] == pytest.approx(0.9)


def test_learning_curve_chart_is_log_scaled_svg_with_one_line_per_model() -> None:
    points = [
        curve_point(m, n, s, [v + 0.1 * s] * 4)
        for m, v in (("net", 0.3), ("plain", 0.5))
        for n in (3, 30, 300)
        for s in (1, 2)
    ]
    rows = tables.learning_curve(points, "mean_ap", seed=0, models=["net", "plain"])
    svg = charts.learning_curve_svg(rows, "lc-test", {"net": 0, "plain": 1})
    assert svg.startswith("<svg") and "training images (log scale)" in svg
    assert ">net<" in svg and ">plain<" in svg  # the legend, as text
    for tick in (">3<", ">30<", ">300<"):  # the sizes trained are the ticks
        assert tick in svg
    assert charts.MODEL_COLOURS[0].lower() in svg.lower()


def test_cross_matrix_cells_colours_and_drop_to_the_diagonal() -> None:
    def cell(train, test, values, reason=None):
        frame = per_image(values) if reason is None else pd.DataFrame(columns=["id"])
        return CrossRun("net", "unet", train, test, {}, frame, reason)

    cells = [
        cell("a", "a", [0.8] * 4),
        cell("a", "b", [0.2] * 4),
        cell("b", "a", [0.4] * 4),
        cell("b", "b", [0.6] * 4),
        cell("union", "a", [0.7] * 4),
        cell("union", "b", [], reason="skipped here"),
    ]
    keys = {t: tables.Column("mean_ap", "mean AP (x)", "") for t in ("a", "b")}
    matrix = tables.cross_matrix(cells, "net", ["a", "b", "union"], ["a", "b"], keys, seed=0)
    assert [c["test"] for c in matrix["columns"]] == ["a", "b"]
    assert [r["train"] for r in matrix["rows"]] == ["a", "b", "union"]
    grid = [[c["mean"] for c in r["cells"]] for r in matrix["rows"]]
    assert grid == [
        pytest.approx([0.8, 0.2]),
        pytest.approx([0.4, 0.6]),
        [pytest.approx(0.7), None],
    ]
    diag = [[c["diagonal"] for c in r["cells"]] for r in matrix["rows"]]
    assert diag == [[True, False], [False, True], [False, False]]
    assert matrix["rows"][0]["cells"][1]["drop"] == pytest.approx(0.2 - 0.6)
    assert matrix["rows"][2]["cells"][0]["drop"] == pytest.approx(0.7 - 0.8)
    assert matrix["rows"][2]["cells"][1]["reason"] == "skipped here"
    # the shading: light for low scores (dark text), dark for high ones (white text)
    assert tables.matrix_colour(0.0) == ("#f7fbff", "#1d2330")
    assert tables.matrix_colour(1.0) == ("#08306b", "#ffffff")
    assert tables.matrix_colour(None)[0] == "#eeeeee"


@pytest.fixture(scope="module")
def studies_page(tmp_path_factory) -> tuple[Path, str]:
    """Two fake datasets with main runs, learning curves (seeds 7, 8) and the full matrix."""
    from cellbench.report import render_report

    root = tmp_path_factory.mktemp("studies")
    for dataset in ("a", "b"):
        base = make_fake_results(root, dataset=dataset, models=MODELS, ids=IDS, title="t")
    raw = json.loads(json.dumps(base.raw))
    raw["run"] = {
        "datasets": ["a", "b"],
        "models": [m for m, _ in MODELS],
        "train_sizes": [3, 20, "all"],
        "seeds": [7, 8],
        "cross": True,
        "union": True,
    }
    raw["datasets"] = {d: {"kind": "synthetic", "source": "generate"} for d in ("a", "b")}
    params = params_from_mapping(raw, root / "params.yaml")
    (root / "raw.json").write_text(json.dumps(raw))  # for tests that vary run:
    data, results = root / "data", root / "results"
    for dataset in ("a", "b"):  # 10 train images: 20 and 'all' are one training
        write_curve_plan(
            curve_plan_path(data, dataset),
            CurvePlan(n_train=10, requested=("3", "20", "all"), labels=("3", "all")),
        )
        for model, _ in MODELS:
            for size, seed in (("3", 7), ("3", 8), ("all", 8)):
                folder = curve_dirs(results, dataset, model, size, seed, params.seed)["scores"]
                assert "curves" in folder.parts  # ('all', 7) is the main run: not written here
                if model == "plain" and size == "3" and seed == 8 and dataset == "b":
                    record = {"dataset": dataset, "model": model, "reason": "fabricated skip"}
                    write_skipped(folder, record)
                    continue
                offset = (0.1 if size == "3" else 0.3) + (0.05 if seed == 8 else 0.0)
                write_scores(folder, [offset, offset + 0.1, offset + 0.2, offset + 0.3])
    for model, _ in MODELS:
        for train, test, value in (
            ("a", "b", 0.15),
            ("b", "a", 0.25),
            ("union", "a", 0.55),
            ("union", "b", 0.65),
        ):
            write_scores(cross_dirs(results, model, train, test)["scores"], [value] * 4)
    out = render_report(params, data, results, root / "report.html")
    return root, out.read_text()


def test_report_has_learning_curves_and_the_matrix(studies_page) -> None:
    _, page = studies_page
    text = re.sub(r"\s+", " ", " ".join(parse(page).text))
    assert 'id="learning-curves"' in page and 'id="cross-dataset"' in page
    assert 'href="#learning-curves"' in page and 'href="#cross-dataset"' in page
    # before the per-dataset sections, after the overview
    assert page.index('id="overview"') < page.index('id="learning-curves"')
    assert page.index('id="cross-dataset"') < page.index('id="dataset-0"')
    # one chart and one table per dataset
    assert page.count('class="learning-curve"') == 2 and "training images (log scale)" in page
    assert "Also asked for: 20, at or above the number of training images" in text
    assert "Skipped: plain : fabricated skip." in text
    table = re.search(
        r'<table class="learning-curve" id="learning-curve-0">.*?</table>', page, re.S
    )
    rows = [" ".join(r.split()) for r in re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)]
    cells = [re.sub(r"<[^>]+>", " ", r).split() for r in rows[1:]]
    # net at 3 images, seeds 7 and 8: 0.25 and 0.30 -> 0.275 (sd 0.035)
    net3 = next(c for c in cells if c[:2] == ["net", "3"])
    assert net3[2] == "2" and net3[3] == "0.275" and "0.035" in net3
    net_all = next(c for c in cells if c[:3] == ["net", "10", "(all)"])
    assert net_all[3] == "2"  # seed 7 is the main run, seed 8 from results/curves
    # the matrix: one per model, union row, diagonal outlined, shaded cells
    assert page.count('class="matrix"') == 2
    matrix = re.search(r'<table class="matrix" id="cross-matrix-0">.*?</table>', page, re.S)
    body = matrix.group(0)
    assert body.count('class="diagonal"') == 2 and ">union<" in body
    assert re.search(r'class="off" style="background:#[0-9a-f]{6};color:#[0-9a-f]{6}">0\.150', body)
    assert ">0.550" in body and ">0.650" in body


def test_curve_datasets_keep_the_other_datasets_out_of_the_curves(studies_page) -> None:
    from cellbench.report import render_report

    root, _ = studies_page
    raw = json.loads((root / "raw.json").read_text())
    raw["run"]["curve_datasets"] = ["b"]
    params = params_from_mapping(raw, root / "params.yaml")
    assert params.curve_datasets == ("b",)
    # dataset a's curve plan is not read: remove it to prove it
    moved = curve_plan_path(root / "data", "a")
    moved.rename(moved.with_suffix(".away"))
    try:
        page = render_report(params, root / "data", root / "results", root / "b_only.html")
    finally:
        moved.with_suffix(".away").rename(moved)
    html = page.read_text()
    assert html.count('class="learning-curve"') == 1 and 'id="learning-curve-0"' in html
    assert html.count('class="matrix"') == 2  # the cross-dataset matrix is unchanged


def test_report_without_run_options_has_neither_section(tmp_path) -> None:
    from cellbench.report import render_report

    params = make_fake_results(tmp_path, dataset="a", models=MODELS, ids=IDS, title="t")
    page = render_report(
        params, tmp_path / "data", tmp_path / "results", tmp_path / "r.html"
    ).read_text()
    assert 'id="learning-curves"' not in page and 'id="cross-dataset"' not in page
    assert "Learning curves" not in page and "Cross-dataset" not in page
