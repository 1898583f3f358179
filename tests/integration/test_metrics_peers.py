"""cellbench.metrics against the peer implementations, on real label images.

Peers (test-only dependencies): ``stardist`` (``stardist.matching`` imports without
TensorFlow), ``cellpose`` (``cellpose.metrics``) and ``py-ctcmetrics`` (CTC SEG).

Data (``../shared/data``): CTC silver truth (ST) scored against gold truth (GT) is a real,
imperfect prediction; CTC, DSB 2018 and BBBC039 labels are also scored against
deliberately perturbed copies (eroded, dilated, split, merged, shifted, dropped, mixed).

Where a figure is not compared to 1e-9 the test says why:

* StarDist computes IoU in **float32** (its ``_safe_divide`` allocates float32), so its
  ``mean_matched_score``, ``mean_true_score`` and ``panoptic_quality`` carry float32
  rounding (~1e-7 relative); counts, precision, recall, F1 and accuracy are exact.
* Cellpose returns ``ap``/``tp``/``fp``/``fn`` as **float32** arrays: the counts are exact
  integers, ``ap`` agrees to float32 precision, and ``tp/(tp+fp+fn)`` recomputed from its
  counts agrees to 1e-12.
* Both peers score an image with no true and no predicted object as 0 (StarDist) or
  NaN (Cellpose); cellbench scores it 1.0 (see the ``metrics`` module docstring). The
  real images here are never both empty; the convention is unit-tested.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench.metrics import (
    DEFAULT_THRESHOLDS,
    match,
    overlap_table,
    score_image,
    score_table,
    summarize,
)
from PIL import Image
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.segmentation import expand_labels, find_boundaries

pytestmark = pytest.mark.shared_data

ALL_T = sorted({*DEFAULT_THRESHOLDS, 0.25, 0.75})
EXACT = 1e-9
FLOAT32 = 5e-6  # relative: float32 sums of IoU (see module docstring)


# --------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def sd_matching():
    return pytest.importorskip(
        "stardist.matching",
        reason="stardist is a test-only peer (pip install stardist; TensorFlow not needed)",
    )


@pytest.fixture(scope="module")
def cp_metrics():
    return pytest.importorskip(
        "cellpose.metrics", reason="cellpose is a test-only peer (pip install cellpose)"
    )


@pytest.fixture(scope="module")
def ctc():
    pytest.importorskip(
        "ctc_metrics", reason="py-ctcmetrics is a test-only peer (pip install py-ctcmetrics)"
    )
    from ctc_metrics.metrics import seg
    from ctc_metrics.scripts.evaluate import match_computed_to_reference_masks

    return seg, match_computed_to_reference_masks


# --------------------------------------------------------------------------- perturbations


def _erode(y, rng):
    y = y.copy()
    y[find_boundaries(y, mode="inner")] = 0
    return y


def _dilate(y, rng):
    return expand_labels(y, distance=2)


def _split(y, rng):
    """Cut about half of the objects in two along a vertical line through the centroid."""
    y = y.astype(np.int64)
    ids = np.unique(y[y > 0])
    top = int(y.max(initial=0))
    chosen = np.zeros(top + 1, bool)
    chosen[ids[rng.random(ids.size) < 0.5]] = True
    cx = np.zeros(top + 1)
    if ids.size:
        cx[ids] = np.asarray(ndi.center_of_mass(np.ones_like(y), y, ids))[:, 1]
    cols = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    cut = chosen[y] & (cols > cx[y])
    return np.where(cut, y + top, y)


def _merge(y, rng):
    """Merge about a third of the objects into a touching neighbour."""
    grown = expand_labels(y, distance=2)
    a = np.concatenate([grown[:, :-1].ravel(), grown[:-1, :].ravel()])
    b = np.concatenate([grown[:, 1:].ravel(), grown[1:, :].ravel()])
    touch = (a > 0) & (b > 0) & (a != b)
    pairs = np.unique(np.stack([a[touch], b[touch]], axis=1), axis=0)
    lut = np.arange(int(y.max(initial=0)) + 1)
    ids = np.unique(y[y > 0])
    for i in ids[rng.random(ids.size) < 0.33]:
        neighbours = pairs[pairs[:, 0] == i, 1]
        if neighbours.size:
            lut[i] = neighbours[0]
    return lut[y]


def _shift(y, rng):
    return np.roll(y, (3, -2), axis=(0, 1))


def _drop(y, rng):
    ids = np.unique(y[y > 0])
    out = y.copy()
    out[np.isin(y, ids[rng.random(ids.size) < 0.25])] = 0
    return out


def _mixed(y, rng):
    """Shift, split, drop, then add a few false-positive blobs."""
    out = _drop(_split(_shift(y, rng), rng), rng).astype(np.int64)
    yy, xx = np.mgrid[: y.shape[0], : y.shape[1]]
    next_id = int(out.max(initial=0)) + 1
    for _ in range(5):
        cy, cx, r = rng.integers(0, y.shape[0]), rng.integers(0, y.shape[1]), rng.integers(3, 9)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (out == 0)
        out[blob] = next_id
        next_id += 1
    return out


PERTURB = {
    "erode": _erode,
    "dilate": _dilate,
    "split": _split,
    "merge": _merge,
    "shift": _shift,
    "drop": _drop,
    "mixed": _mixed,
}


# --------------------------------------------------------------------------- real labels


def _ctc_pairs(root: Path):
    """(name, gold truth, silver truth) for every CTC frame that has both."""
    out = []
    for gt_path in sorted(root.glob("ctc/*/01_GT/SEG/man_seg*.tif")):
        st_path = gt_path.parents[2] / "01_ST" / "SEG" / gt_path.name
        if st_path.is_file():
            name = f"{gt_path.parents[2].name}/{gt_path.stem}"
            out.append((name, tifffile.imread(gt_path), tifffile.imread(st_path)))
    return out


def _dsb_labels(folder: Path) -> np.ndarray:
    masks = sorted((folder / "masks").glob("*.png"))
    y = None
    for i, path in enumerate(masks, start=1):
        m = np.asarray(Image.open(path)) > 0
        if y is None:
            y = np.zeros(m.shape, np.int32)
        y[m] = i
    return y


def _real_truths(root: Path):
    """(name, dense label image) from several datasets, a few images each."""
    out = []
    for path in sorted(root.glob("dsb2018/stage1_train/*"))[:12]:
        out.append((f"dsb/{path.name[:8]}", _dsb_labels(path)))
    for path in sorted(root.glob("bbbc039/masks/*.png"))[:5]:
        out.append((f"bbbc039/{path.stem[:14]}", cc_label(np.asarray(Image.open(path))[..., 0])))
    # 1,000+ nuclei: BBBC039 labels tiled 4 x 4 (ids made unique per tile)
    first = cc_label(np.asarray(Image.open(sorted(root.glob("bbbc039/masks/*.png"))[0]))[..., 0])
    step = int(first.max()) + 1
    tiles = [
        [np.where(first > 0, first + step * (4 * i + j), 0) for j in range(4)] for i in range(4)
    ]
    out.append(("bbbc039/tiled-4x4", np.block(tiles)))
    for ds, frames in (("Fluo-N2DH-SIM+", 3), ("PhC-C2DL-PSC", 2), ("Fluo-C2DL-MSC", 1)):
        seg_dir = "01_ST" if ds == "PhC-C2DL-PSC" else "01_GT"
        for path in sorted(root.glob(f"ctc/{ds}/{seg_dir}/SEG/*.tif"))[:frames]:
            out.append((f"{ds}/{path.stem}", tifffile.imread(path)))
    return out


@pytest.fixture(scope="module")
def cases(shared_data):
    """(name, y_true, y_pred): CTC ST-vs-GT plus every perturbation over real labels."""
    rng = np.random.default_rng(2018)
    result = [(f"{name}:gt-vs-st", gt, st) for name, gt, st in _ctc_pairs(shared_data)]
    names = list(PERTURB)
    for k, (name, y) in enumerate(_real_truths(shared_data)):
        kind = names[k % len(names)]
        result.append((f"{name}:{kind}", y, PERTURB[kind](y, rng)))
    assert len(result) >= 30
    assert max(len(np.unique(c[1])) for c in result) > 1000
    return result


# --------------------------------------------------------------------------- stardist


def test_stardist_matching_per_image(cases, sd_matching):
    for name, yt, yp in cases:
        peer = sd_matching.matching(yt, yp, thresh=ALL_T)
        score = score_image(yt, yp)
        for t, theirs in zip(ALL_T, peer, strict=True):
            ours = match(yt, yp, t)
            where = f"{name} @ {t}"
            assert (ours.n_true, ours.n_pred) == (theirs.n_true, theirs.n_pred), where
            assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn), where
            assert score.matching(t).tp == theirs.tp, where
            for mine, peer_name in (
                ("precision", "precision"),
                ("recall", "recall"),
                ("f1", "f1"),
                ("ap", "accuracy"),
            ):
                assert getattr(ours, mine) == pytest.approx(getattr(theirs, peer_name), abs=EXACT)
                mine_in_score = getattr(score.matching(t), mine)
                assert mine_in_score == pytest.approx(getattr(ours, mine), abs=EXACT)
            # float32 IoU inside StarDist (module docstring)
            assert ours.mean_matched_iou == pytest.approx(theirs.mean_matched_score, rel=FLOAT32)
            assert ours.mean_true_iou == pytest.approx(theirs.mean_true_score, rel=FLOAT32)
            assert ours.pq == pytest.approx(theirs.panoptic_quality, rel=FLOAT32)
        assert score.pq == pytest.approx(peer[ALL_T.index(0.5)].panoptic_quality, rel=FLOAT32)


def test_stardist_matched_pairs_are_identical(cases, sd_matching):
    """Above IoU 0.5 the matching is unique: the very same pairs, not just the counts."""
    for name, yt, yp in cases[::3]:
        for t in (0.5, 0.7, 0.9):
            theirs = sd_matching.matching(yt, yp, thresh=t, report_matches=True)
            ok = np.asarray(theirs.matched_tps, dtype=np.intp)  # indices of pairs >= t
            pairs = np.asarray(theirs.matched_pairs).reshape(-1, 2)[ok]
            ours = match(yt, yp, t)
            assert sorted(map(tuple, pairs.tolist())) == sorted(
                zip(ours.matched_true.tolist(), ours.matched_pred.tolist(), strict=True)
            ), f"{name} @ {t}"


@pytest.mark.parametrize("by_image", [False, True])
def test_stardist_matching_dataset(cases, sd_matching, by_image):
    ys_true = [c[1] for c in cases]
    ys_pred = [c[2] for c in cases]
    peer = sd_matching.matching_dataset(
        ys_true, ys_pred, thresh=ALL_T, by_image=by_image, show_progress=False
    )
    per_image = pd.DataFrame([{"id": name, **score_image(yt, yp).row()} for name, yt, yp in cases])
    summary = summarize(per_image, group_by=None)
    for t, theirs in zip(ALL_T, peer, strict=True):
        tag = f"{t:.2f}"
        pooled = summary["pooled"]
        assert (pooled[f"tp@{tag}"], pooled[f"fp@{tag}"], pooled[f"fn@{tag}"]) == (
            theirs.tp,
            theirs.fp,
            theirs.fn,
        )
        block = summary["per_image_mean"] if by_image else pooled
        for mine, peer_name in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1"),
            ("ap", "accuracy"),
        ):
            assert block[f"{mine}@{tag}"] == pytest.approx(getattr(theirs, peer_name), abs=EXACT), (
                f"{mine} @ {tag}"
            )
        if not by_image:
            assert pooled[f"pq@{tag}"] == pytest.approx(theirs.panoptic_quality, rel=FLOAT32)
            assert pooled[f"sq@{tag}"] == pytest.approx(theirs.mean_matched_score, rel=FLOAT32)


# --------------------------------------------------------------------------- cellpose


# Cellpose divides 0/0 for ids absent from an image (gaps left by merge/drop); harmless.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_cellpose_average_precision(cases, cp_metrics):
    ys_true = [c[1] for c in cases]
    ys_pred = [c[2] for c in cases]
    ap, tp, fp, fn = cp_metrics.average_precision(ys_true, ys_pred, threshold=ALL_T)
    for i, (name, yt, yp) in enumerate(cases):
        score = score_table(overlap_table(yt, yp))
        for k, t in enumerate(ALL_T):
            m = score.matching(t)
            assert (m.tp, m.fp, m.fn) == (tp[i, k], fp[i, k], fn[i, k]), f"{name} @ {t}"
            # Cellpose stores ap as float32; from its (exact) counts in float64 it is exact.
            assert m.ap == pytest.approx(float(ap[i, k]), rel=1e-6)
            exact = float(tp[i, k]) / float(tp[i, k] + fp[i, k] + fn[i, k])
            assert m.ap == pytest.approx(exact, abs=EXACT)
        mean_ap = float(np.mean([float(ap[i, ALL_T.index(t)]) for t in DEFAULT_THRESHOLDS]))
        assert score.mean_ap == pytest.approx(mean_ap, rel=1e-6)


# --------------------------------------------------------------------------- CTC SEG


def _write(path: Path, y: np.ndarray) -> Path:
    tifffile.imwrite(path, y.astype(np.uint16))
    return path


def test_ctc_seg_gold_vs_silver(shared_data, ctc):
    """SEG of CTC silver truth against (partial) gold truth, per frame and per sequence."""
    seg, match_masks = ctc
    for ds in ("DIC-C2DH-HeLa", "Fluo-N2DL-HeLa"):
        refs = sorted((shared_data / "ctc" / ds / "01_GT" / "SEG").glob("man_seg*.tif"))
        comps = [r.parents[2] / "01_ST" / "SEG" / r.name for r in refs]
        res = match_masks([str(r) for r in refs], [str(c) for c in comps], threads=1)
        rows = []
        for k, (r, c) in enumerate(zip(refs, comps, strict=True)):
            score = score_image(tifffile.imread(r), tifffile.imread(c), annotation="partial")
            theirs = seg([res["labels_ref"][k]], [res["ious"][k]])
            assert score.seg == pytest.approx(theirs, abs=EXACT), f"{ds}/{r.name}"
            assert math.isnan(score.mean_ap)  # partial GT: only SEG is scored
            assert score.matchings == ()
            rows.append({"id": r.stem, **score.row()})
        pooled = summarize(pd.DataFrame(rows), group_by=None)["pooled"]["seg"]
        assert pooled == pytest.approx(seg(res["labels_ref"], res["ious"]), abs=EXACT), ds


def test_ctc_seg_perturbed(shared_data, ctc, tmp_path):
    seg, match_masks = ctc
    rng = np.random.default_rng(7)
    refs, comps, rows = [], [], []
    for ds in ("Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1", "Fluo-C2DL-MSC"):
        for path in sorted((shared_data / "ctc" / ds / "01_GT" / "SEG").glob("*.tif"))[:2]:
            y = tifffile.imread(path)
            for kind, fn in PERTURB.items():
                name = f"{ds}_{path.stem}_{kind}"
                pred = fn(y, rng)
                refs.append(_write(tmp_path / f"{name}_ref.tif", y))
                comps.append(_write(tmp_path / f"{name}_comp.tif", pred))
                rows.append({"id": name, **score_image(y, pred, annotation="partial").row()})
    res = match_masks([str(p) for p in refs], [str(p) for p in comps], threads=1)
    for k, row in enumerate(rows):
        theirs = seg([res["labels_ref"][k]], [res["ious"][k]])
        assert row["seg"] == pytest.approx(theirs, abs=EXACT), row["id"]
    pooled = summarize(pd.DataFrame(rows), group_by=None)["pooled"]["seg"]
    assert pooled == pytest.approx(seg(res["labels_ref"], res["ious"]), abs=EXACT)


# --------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_quick_run(repo_root, sd_matching, cp_metrics, capsys):
    """benchmarks/bench_metrics.py --quick: identical TP counts, >= 3x the fastest peer."""
    path = repo_root / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--repeats", "2", "--min-speedup", "3"]) == 0
    out = capsys.readouterr().out
    assert "All methods report identical TP counts" in out
    assert "Fitted log-log slope" in out
