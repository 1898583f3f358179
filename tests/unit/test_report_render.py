"""The report page rendered from a small fake results tree.

:func:`make_fake_results` builds the files the report reads (converted data, split,
masks, scores, model folders, timings) from numpy label images and the real
scoring code; the names in it can carry markup. tests/workflow/test_report_browser.py
opens the same page in a real browser.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cellbench.config import ScoreOptions, params_from_mapping
from cellbench.io import write_image, write_json, write_labels
from cellbench.score import score_dir

SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>x</b>"
IMG = "<img src=x onerror=alert(2)>"
TITLE = "<script>alert(3)</script> report"
MARKUP = (SCRIPT, BOLD, IMG, TITLE)

#: per model: (name, family, drop one true object, add a false positive)
FAKE_MODELS = ((SCRIPT, "unet"), (BOLD, "classical"))
FAKE_DATASET = "<i>ds</i>"
FAKE_IDS = (SCRIPT, BOLD, "plain_1", "plain_2")


def _disks(shape, centres, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = k
    return labels


def make_fake_results(
    root: Path,
    *,
    dataset: str = FAKE_DATASET,
    models=FAKE_MODELS,
    ids=FAKE_IDS,
    cell_types=("nuc", IMG),
    title: str = TITLE,
    size: int = 64,
    annotation: str = "full",
):
    """Write a complete results tree under ``root``; return its :class:`Params`.

    Images are ``size`` x ``size`` with 4 disks; the first model finds all of them
    but one and adds a false positive, the second finds them shifted (lower IoU).
    The first model has training history and timings, the second has neither (an
    old run: the page must show "–").
    """
    rng = np.random.default_rng(0)
    data, results = root / "data", root / "results"
    converted = data / "converted" / dataset
    centres = [(16, 16), (16, 46), (46, 16), (46, 46)]
    index, split = [], []
    for k, image_id in enumerate(ids):
        truth = _disks((size, size), centres, 8 + k % 2)
        image = (truth > 0) * 150 + rng.integers(0, 60, (size, size))
        write_image(converted / "images" / f"{image_id}.tif", image.astype(np.uint8))
        write_labels(converted / "labels" / f"{image_id}.tif", truth)
        index.append(
            {
                "id": image_id,
                "height": size,
                "width": size,
                "channels": 1,
                "n_instances": len(centres),
                "cell_type": cell_types[k % len(cell_types)],
                "group": image_id,
                "sequence": "",
                "frame": -1,
                "annotation": annotation,
                "source": "fake",
            }
        )
        split.append({"id": image_id, "split": "test"})
    split += [{"id": "train_only", "split": "train"}]
    pd.DataFrame(index).to_csv(converted / "index.csv", index=False)
    (data / "splits").mkdir(parents=True, exist_ok=True)
    split_csv = data / "splits" / f"{dataset}.csv"
    split_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(split).to_csv(split_csv, index=False)

    for m, (model, family) in enumerate(models):
        masks = results / "masks" / dataset / model
        for k, image_id in enumerate(ids):
            if m == 0:  # all but the last object, plus a false positive in a corner
                pred = _disks((size, size), centres[:-1] + [(4, 60)], 8 + k % 2)
            else:  # every object, shifted by 3 px (IoU about 0.6)
                pred = _disks((size, size), [(y + 3, x + 3) for y, x in centres], 8)
            write_labels(masks / f"{image_id}.tif", pred)
        score_dir(
            masks,
            converted,
            split_csv,
            results / "scores" / dataset / model,
            dataset=dataset,
            model=model,
            settings=ScoreOptions(),
        )
        model_dir = results / "models" / dataset / model
        write_json(
            model_dir / "config.json",
            {
                "model": model,
                "family": family,
                "options": {"select_by": "val_loss"},
                "params_sha256": "0" * 64,
                "trainable": m == 0,
                "epochs_run": 3 if m == 0 else 0,
                "n_train_images": 1,
                "n_val_images": 0,
                "device": "cpu",
                "train_seconds": 12.5 if m == 0 else 0.0,
                "tune_seconds": 0.5,
                "versions": {"python": "3.11", "cellbench": "0"},
            },
        )
        write_json(
            model_dir / "thresholds.json",
            {"selected": {"threshold": 0.5}, "metric": "mean_ap", "val_score": 0.5},
        )
        if m == 0:
            pd.DataFrame(
                {
                    "epoch": [1, 2, 3],
                    "train_loss": [1.0, 0.7, 0.5],
                    "val_loss": [1.1, 0.8, 0.7],
                    "val_mean_ap": [np.nan, np.nan, 0.4],
                    "lr": [1e-3] * 3,
                    "seconds": [1.0] * 3,
                }
            ).to_csv(model_dir / "history.csv", index=False)
            timings = pd.DataFrame(
                {"id": list(ids), "height": size, "width": size, "seconds": 0.25}
            )
            for stage in ("predictions", "masks"):
                folder = results / stage / dataset / model
                folder.mkdir(parents=True, exist_ok=True)
                timings.to_csv(folder / "timings.csv", index=False)
                write_json(
                    folder / "resources.json",
                    {
                        "device": "cpu",
                        "peak_rss_bytes": 2_000_000_000,
                        "cuda_max_memory_allocated_bytes": None,
                    },
                )
    raw = {
        "seed": 7,
        "run": {"datasets": [dataset], "models": [m for m, _ in models]},
        "datasets": {dataset: {"kind": "synthetic", "source": "generate"}},
        "models": {m: {"family": f} for m, f in models},
        "score": {},
        "report": {"title": title},
    }
    return params_from_mapping(raw, root / "params.yaml")


class _Text(HTMLParser):
    """The page's text and its start tags (what a browser would build)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def fake_page(tmp_path_factory) -> tuple[Path, str]:
    from cellbench.report import render_report

    root = tmp_path_factory.mktemp("fake")
    params = make_fake_results(root)
    out = render_report(
        params, root / "data", root / "results", root / "report.html", root / "assets"
    )
    return root, out.read_text()


def test_markup_in_names_is_escaped_and_shown_as_text(fake_page) -> None:
    _, page = fake_page
    for raw in MARKUP + (FAKE_DATASET,):
        assert raw not in page, raw
    parsed = parse(page)
    text = "".join(parsed.text)
    for raw in (SCRIPT, BOLD, IMG, FAKE_DATASET):
        assert raw in text, raw  # shown as text: in tables, captions, headings
    assert TITLE in text
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags and "b" in tags  # <b> only from the template itself
    for tag, attrs in parsed.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    # chart legends (matplotlib SVG text) escape the names too
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_page_is_self_contained_small_and_ascii(fake_page) -> None:
    _, page = fake_page
    assert page.isascii()
    assert len(page.encode()) < 1_000_000
    # nothing is fetched: no external scripts, stylesheets, images or fonts
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "@import" not in page and "url(http" not in page
    parsed = parse(page)
    assert {tag for tag, _ in parsed.tags} >= {"table", "svg", "img", "figure"}


def test_page_sections_and_numbers(fake_page) -> None:
    root, page = fake_page
    text = "".join(parse(page).text)
    for heading in (
        "Overview",
        "The data",
        "Leaderboard",
        "Precision and recall",
        "Scores against the IoU threshold",
        "Per cell type",
        "Training",
        "Cost",
        "Gallery",
        "Definitions",
        "Provenance",
    ):
        assert heading in text, heading
    # thresholds come from the scores: 0.50:0.05:0.95 averaged, 0.25 / 0.50 / 0.75 shown
    assert "mean AP (0.50:0.05:0.95)" in text and "F1@0.50" in text
    for tag in ("IoU 0.25", "IoU 0.50", "IoU 0.75"):
        assert tag in text
    # licence and citation of the dataset kind, split sizes
    assert "CC0 1.0" in text and "train: 1, val: 0, test: 4" in text
    # the leaderboard: the first model matches 3 of 4 objects + 1 FP at every threshold
    per_image = pd.read_csv(root / "results/scores" / FAKE_DATASET / SCRIPT / "per_image.csv")
    assert per_image["ap@0.50"].tolist() == [0.6] * 4
    assert "0.600" in text
    # cost of the run with timings; the other (an older run) shows dashes
    assert "2.00 GB" in text and "12.5" in text
    cost = re.search(r'<table class="cost">.*?</table>', page, re.DOTALL).group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", cost, re.DOTALL)
    old = next(r for r in rows if "&lt;b&gt;x&lt;/b&gt;" in r)
    assert old.count(">&#8211;<") >= 6  # "–", as a character reference (the page is ASCII)


def test_highlight_only_when_significant(fake_page) -> None:
    from cellbench.report.stats import compare_best

    root, page = fake_page
    board = re.search(r'<table class="leaderboard".*?</table>', page, re.DOTALL).group(0)
    table = pd.read_csv(root / "assets/scores" / f"{FAKE_DATASET}.csv", keep_default_na=False)
    flags = [c for c in table.columns if c.endswith("_best")]
    assert board.count('class="best"') == int(table[flags].to_numpy().sum())
    # each flag is the significance rule applied to the per-image scores
    scores = {
        m: pd.read_csv(
            root / "results/scores" / FAKE_DATASET / m / "per_image.csv", keep_default_na=False
        ).set_index("id")
        for m, _ in FAKE_MODELS
    }
    for flag in flags:
        key = flag[: -len("_best")]
        cmp = compare_best({m: df[key].astype(float) for m, df in scores.items()}, seed=7)
        marked = set(table.loc[table[flag].astype(str) == "True", "model"])
        assert marked == ({cmp.best} if cmp.significant else set()), key
    assert "highlighted" in page or "not significant" in page


def test_gallery_has_the_same_images_for_every_model_and_the_worst(fake_page) -> None:
    _, page = fake_page
    gallery = re.search(r'-gallery">Gallery</h3>.*?</section>', page, re.DOTALL).group(0)
    n_models = len(FAKE_MODELS)
    rows = re.findall(r"<h4>Test image", gallery)
    assert 1 <= len(rows) <= 3
    imgs = re.findall(r'<img src="data:image/png;base64,', gallery)
    # per shown image: the image + one per model; then WORST_IMAGES per model
    from cellbench.report.render import WORST_IMAGES

    assert len(imgs) == len(rows) * (1 + n_models) + WORST_IMAGES * n_models
    for colour in ("#56B4E9", "#D55E00", "#F0E442"):
        assert colour in gallery  # the legend


def test_render_is_deterministic_except_the_timestamp(fake_page, tmp_path) -> None:
    from cellbench.report import render_report

    root, first = fake_page
    params = make_fake_results(root)  # same files again
    second = render_report(params, root / "data", root / "results", tmp_path / "again.html")
    stamp = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")
    assert stamp.sub("T", first) == stamp.sub("T", second.read_text())


def test_assets_for_snakemake_report(fake_page) -> None:
    root, _ = fake_page
    assets = root / "assets"
    board = pd.read_csv(assets / "scores" / f"{FAKE_DATASET}.csv", keep_default_na=False)
    assert set(board["model"]) == {m for m, _ in FAKE_MODELS}
    for column in ("mean_ap", "mean_ap_ci_low", "mean_ap_ci_high", "mean_ap_best", "seg"):
        assert column in board.columns
    for model, _ in FAKE_MODELS:
        folder = assets / "scores" / FAKE_DATASET / model
        assert (folder / "per_image.csv").read_bytes() == (
            root / "results/scores" / FAKE_DATASET / model / "per_image.csv"
        ).read_bytes()
        assert json.loads((folder / "summary.json").read_text())["model"] == model
        svg = (assets / "training" / FAKE_DATASET / f"{model}.svg").read_text()
        assert svg.startswith("<?xml") and "<svg" in svg and SCRIPT not in svg


def test_template_environment_autoescapes() -> None:
    from cellbench.report.render import environment

    env = environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x=SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "report.html.j2" in env.list_templates()


def test_gallery_crops_shrink_to_keep_the_page_small() -> None:
    from cellbench.report.gallery import png_data_uri
    from cellbench.report.render import (
        GALLERY_BUDGET_BYTES,
        GALLERY_CROP,
        GALLERY_MIN_CROP,
        gallery_crop,
    )

    assert gallery_crop(13) == GALLERY_CROP  # the default run: 1 dataset, 2 models
    many = 4 * (3 * 7 + 2 * 6)  # 4 datasets x 6 models
    assert GALLERY_MIN_CROP < gallery_crop(many) < GALLERY_CROP
    assert gallery_crop(100_000) == GALLERY_MIN_CROP
    # worst case for PNG size, pure noise: the pictures still fit the budget
    side = gallery_crop(many)
    noise = np.random.default_rng(0).random((side, side))
    assert many * len(png_data_uri(noise)) < 1.1 * GALLERY_BUDGET_BYTES


def test_partial_ground_truth_is_ranked_by_seg(tmp_path) -> None:
    from cellbench.report import render_report

    params = make_fake_results(tmp_path, ids=("a", "b", "c"), annotation="partial")
    page = render_report(
        params, tmp_path / "data", tmp_path / "results", tmp_path / "p.html"
    ).read_text()
    board = re.search(r'<table class="leaderboard".*?</table>', page, re.DOTALL).group(0)
    assert ">SEG<" in board and "mean AP" not in board and "PQ" not in board
    assert "Precision and recall" not in page and "Scores against the IoU threshold" not in page
    assert "not scored" in page  # unmatched predictions on partial truth: neutral colour
    assert "#BBBBBB" in page


def test_skipped_combination_is_listed_with_its_reason(tmp_path) -> None:
    """A model that does not apply to a dataset (lstm_unet without time) shows as skipped."""
    from cellbench.report import render_report
    from cellbench.skip import write_skipped

    root = tmp_path / "fake"
    params = make_fake_results(root)
    reason = "dataset has no time: skipped here"
    record = {"dataset": FAKE_DATASET, "model": "lstm", "family": "lstm_unet", "reason": reason}
    results = root / "results"
    for stage in ("models", "predictions", "masks"):
        write_skipped(results / stage / FAKE_DATASET / "lstm", record)
    score_dir(
        results / "masks" / FAKE_DATASET / "lstm",
        root / "data" / "converted" / FAKE_DATASET,
        root / "data" / "splits" / f"{FAKE_DATASET}.csv",
        results / "scores" / FAKE_DATASET / "lstm",
        dataset=FAKE_DATASET,
        model="lstm",
        settings=ScoreOptions(),
    )
    raw = dict(params.raw)
    raw["run"] = {"datasets": [FAKE_DATASET], "models": [*raw["run"]["models"], "lstm"]}
    raw["models"] = {**raw["models"], "lstm": {"family": "lstm_unet"}}
    params = params_from_mapping(raw, root / "params.yaml")
    page = render_report(
        params, root / "data", results, root / "report.html", root / "assets"
    ).read_text()
    text = " ".join(parse(page).text)
    assert f"Skipped: lstm (lstm_unet): {reason}." in re.sub(r"\s+", " ", text)
    assert 'class="skipped"' in page
    assert (root / "assets" / "scores" / FAKE_DATASET / "lstm" / "summary.json").is_file()
    assert (root / "assets" / "training" / FAKE_DATASET / "lstm.svg").is_file()
