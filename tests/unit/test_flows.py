"""Flow targets, flow tracking and the ``flow`` model family on small synthetic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cellbench.config import ModelConfig
from cellbench.metrics import score_image
from cellbench.models import MODEL_FAMILIES, get_family
from cellbench.models.flow import Flow
from cellbench.postprocess.flows import (
    cluster_positions,
    fill_holes,
    finish_labels,
    flows_to_labels,
    follow_flows,
    mask_flow_errors,
    track_flows,
)
from cellbench.targets import (
    FLOW_SCALE,
    boundary_weights,
    instance_centres,
    labels_to_flows,
    sparse_flows,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """Touching disks, an ellipse, a C-shape, a long thin rod, a cell cut by the border."""
    shape = (96, 128)
    labels = np.zeros(shape, np.int32)
    labels[disk(shape, (20, 20), 10)] = 1
    labels[disk(shape, (20, 38), 10) & (labels == 0)] = 2  # touches 1
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels[((yy - 60) / 9.0) ** 2 + ((xx - 30) / 18.0) ** 2 <= 1] = 3
    ring = disk(shape, (30, 90), 16) & ~disk(shape, (30, 90), 9)
    ring[24:37, 90:] = False  # open ring: non-convex, mean outside the shape
    labels[ring] = 4
    labels[80:84, 60:120] = 5  # 4 x 60 rod
    labels[disk(shape, (90, 10), 9)] = 6  # cut by the bottom border
    return labels


# ----------------------------------------------------------------------------- targets


def test_flows_shape_norm_and_background(scene):
    target = labels_to_flows(scene)
    assert target.shape == (3, *scene.shape) and target.dtype == np.float32
    fg = scene > 0
    np.testing.assert_array_equal(target[2], fg.astype(np.float32))
    assert np.all(target[:2, ~fg] == 0)
    norm = np.hypot(target[0], target[1])[fg]
    assert np.sum(norm == 0) <= 6  # at most the centres, where a shape is symmetric
    np.testing.assert_allclose(norm[norm > 0], 1.0, atol=1e-5)


def test_flows_point_to_the_centre_of_a_disk():
    labels = disk((41, 41), (20, 20), 15).astype(np.int32)
    dy, dx, _ = labels_to_flows(labels)
    yy, xx = np.mgrid[:41, :41]
    ry, rx = 20 - yy, 20 - xx
    r = np.hypot(ry, rx)
    inside = (labels > 0) & (r > 0)
    cos = (dy * ry + dx * rx)[inside] / r[inside]
    assert cos.min() > 0.95


def test_flows_are_equivariant_under_transpose_and_flip():
    # shapes whose mean coordinate is a pixel, so the centre does not depend on tie-breaking
    labels = np.zeros((40, 50), np.int32)
    labels[disk((40, 50), (20, 25), 12)] = 3
    labels[1:8, 2:11] = 5
    f = labels_to_flows(labels)
    ft = labels_to_flows(np.ascontiguousarray(labels.T))
    np.testing.assert_allclose(ft[0], f[1].T, atol=1e-5)
    np.testing.assert_allclose(ft[1], f[0].T, atol=1e-5)
    fl = labels_to_flows(np.ascontiguousarray(labels[::-1]))
    np.testing.assert_allclose(fl[0], -f[0][::-1], atol=1e-5)


def test_flows_of_an_instance_ignore_its_neighbours(scene):
    alone = np.where(scene == 1, 1, 0).astype(np.int32)
    np.testing.assert_allclose(
        labels_to_flows(alone)[:2], labels_to_flows(scene)[:2] * (alone > 0), atol=1e-6
    )


def test_flows_edge_cases():
    empty = labels_to_flows(np.zeros((5, 7), np.int32))
    assert empty.shape == (3, 5, 7) and not empty.any()
    single = np.zeros((5, 5), np.int32)
    single[2, 2] = 9
    f = labels_to_flows(single)
    assert f[2, 2, 2] == 1 and np.all(f[:2] == 0)
    # a cell inside a ring-shaped cell
    nested = np.zeros((30, 30), np.int32)
    nested[disk((30, 30), (15, 15), 8)] = 1
    nested[disk((30, 30), (15, 15), 3)] = 2
    f = labels_to_flows(nested)
    np.testing.assert_allclose(np.hypot(f[0], f[1])[nested > 0].max(), 1.0, atol=1e-6)
    pred = flows_to_labels(f[:2], f[2], min_size=0)
    assert score_image(nested, pred, extra_thresholds=()).matching(0.5).ap == 1.0
    keys, flows = sparse_flows(np.array([[0, 4, 4, 4, 0]], np.uint16))
    np.testing.assert_array_equal(keys, [1, 2, 3])
    np.testing.assert_allclose(flows[1], [1, 0, -1])  # a row: towards the middle
    with pytest.raises(ValueError, match="2-D"):
        labels_to_flows(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(TypeError, match="integer"):
        labels_to_flows(np.zeros((3, 4), np.float32))


def test_centres_lie_inside_even_for_non_convex_shapes(scene):
    ys, xs = np.nonzero(scene)
    ids = scene[ys, xs]
    centres = instance_centres(ys, xs, ids)
    assert len(centres) == 6
    np.testing.assert_array_equal(ids[centres], np.arange(1, 7))


def test_boundary_weights(scene):
    w = boundary_weights(scene, sigma=2.0)
    assert w.shape == scene.shape and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() >= 0
    touching = np.argwhere((scene[:, :-1] == 1) & (scene[:, 1:] == 2))
    assert len(touching) and np.all(w[touching[:, 0], touching[:, 1]] == 1.0)
    assert np.all(w[touching[:, 0], touching[:, 1] + 1] == 1.0)
    assert w[20, 20] < 1e-3  # the middle of cell 1
    assert not boundary_weights(np.zeros((4, 4), np.int32)).any()


# ----------------------------------------------------------------------------- tracking


def test_round_trip_recovers_every_instance(scene):
    target = labels_to_flows(scene)
    pred = flows_to_labels(target[:2], target[2], min_size=0)
    assert pred.dtype == np.int32 and pred.shape == scene.shape
    assert pred.max() == 6
    scores = score_image(scene, pred, extra_thresholds=())
    assert scores.matching(0.5).ap == 1.0
    assert scores.mean_ap > 0.95


def test_round_trip_accepts_tensors_and_logit_free_probabilities(scene):
    target = labels_to_flows(scene)
    prob = np.where(target[2] > 0, 0.9, 0.1).astype(np.float32)
    a = flows_to_labels(target[:2], prob, min_size=0)
    b = flows_to_labels(torch.from_numpy(target[:2]), torch.from_numpy(prob), min_size=0)
    np.testing.assert_array_equal(a, b)
    assert not flows_to_labels(target[:2], prob, cellprob_threshold=0.95).any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_round_trip_on_gpu_matches_cpu(scene):
    target = labels_to_flows(scene)
    cpu = flows_to_labels(target[:2], target[2], min_size=0)
    gpu = flows_to_labels(target[:2], target[2], min_size=0, device="cuda")
    assert score_image(cpu, gpu, extra_thresholds=()).matching(0.5).ap == 1.0


def test_follow_flows_moves_pixels_to_the_sink():
    flows = np.zeros((2, 9, 9), np.float32)
    flows[1, 4, :4] = 1.0  # row 4: rightwards up to column 4
    keys = torch.tensor([4 * 9 + 0, 4 * 9 + 2])
    pos = follow_flows(torch.from_numpy(flows), keys, niter=20)
    np.testing.assert_allclose(pos[:, 0].numpy(), [4, 4])
    assert np.all(np.abs(pos[:, 1].numpy() - 4) <= 1.0)


def test_clustering_uses_only_occupied_cells():
    # two tight clouds of 30 points far apart on a huge canvas: no dense histogram
    rng = np.random.default_rng(0)
    a = rng.normal([100.5, 100.5], 0.1, size=(30, 2))
    b = rng.normal([50_000.5, 70_000.5], 0.1, size=(30, 2))
    stray = np.array([[10.0, 10.0], [60_000.0, 1.0]])
    pos = torch.from_numpy(np.concatenate([a, b, stray])).float()
    lab = cluster_positions(pos, (100_000, 100_000)).numpy()
    assert len(set(lab[:30])) == 1 and len(set(lab[30:60])) == 1
    assert lab[0] != lab[30] and lab[0] > 0 and lab[30] > 0
    assert np.all(lab[60:] == 0)  # pixels that did not converge belong to nothing


def test_flow_quality_control_drops_inconsistent_masks(scene):
    target = labels_to_flows(scene)
    flows = target[:2].copy()
    bad = scene == 3
    # the ellipse's flows point all to its middle but are rotated by 90 degrees
    flows[0][bad], flows[1][bad] = target[1][bad], -target[0][bad]
    masks = track_flows(target[:2], target[2])
    labels = masks.to_labels()
    assert masks.n == 6 and labels.dtype == np.int32
    errors = mask_flow_errors(masks, target[:2])
    assert np.all(errors[1:] < 1e-6)
    np.testing.assert_allclose(mask_flow_errors(labels, target[:2]), errors)
    errors = mask_flow_errors(masks, flows)
    worst = labels[bad][0]
    assert errors[worst] > 0.4 and np.delete(errors, worst).max() < 1e-6
    kept = finish_labels(masks, errors, flow_threshold=0.4, min_size=0)
    assert kept.max() == 5 and not kept[bad].any()
    assert finish_labels(labels, errors, flow_threshold=None, min_size=0).max() == 6
    # masks are checked in batches of whole masks: any batch size gives the same errors
    # (up to the rounding of differently grouped sparse solves)
    for batch_pixels in (1, 50, 400):
        np.testing.assert_allclose(
            mask_flow_errors(masks, flows, batch_pixels=batch_pixels), errors, atol=1e-12
        )


def test_finish_labels_min_size_and_holes():
    labels = np.zeros((20, 20), np.int32)
    labels[2:9, 2:9] = 1
    labels[5, 5] = 0  # a hole in 1
    labels[12:14, 12:14] = 2  # 4 px
    out = finish_labels(labels, None, flow_threshold=None, min_size=5)
    assert out.max() == 1 and out[5, 5] == 1 and not out[12:14, 12:14].any()
    with pytest.raises(ValueError, match="flow errors"):
        finish_labels(labels, None, flow_threshold=0.4)


def test_fill_holes_only_inside_one_mask():
    labels = np.zeros((12, 12), np.int32)
    labels[1:6, 1:6] = 1
    labels[3, 3] = 0  # enclosed by 1
    labels[6:11, 1:11] = 2
    labels[1:6, 6:11] = 3
    labels[5, 5:7] = 0  # a gap between 1, 2 and 3
    labels[0:3, 11] = 0
    out = fill_holes(labels)
    assert out[3, 3] == 1
    assert np.all(out[5, 5:7] == 0)
    np.testing.assert_array_equal(fill_holes(np.zeros((3, 3), np.int32)), 0)


def test_empty_and_bad_inputs():
    flows = np.zeros((2, 16, 16), np.float32)
    assert not flows_to_labels(flows, np.zeros((16, 16), np.float32)).any()
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flows_to_labels(np.zeros((3, 16, 16), np.float32), np.zeros((16, 16)))


# ----------------------------------------------------------------------------- family


def family(**options) -> Flow:
    return get_family(ModelConfig("flow", "flow", {"encoder": "resnet18", **options}))


def test_family_is_registered_and_documents_its_maps():
    assert MODEL_FAMILIES["flow"].load() is Flow
    assert Flow.vector_pairs == ((0, 1),)
    assert Flow.map_names == ("flow_y", "flow_x", "cellprob")


def test_family_target_loss_activate(scene):
    plain, contour = family(), family(contour_weight=4.0)
    t = plain.make_target(scene)
    assert t.shape == (3, *scene.shape)
    np.testing.assert_allclose(t[:2], labels_to_flows(scene)[:2] * FLOW_SCALE)
    tc = contour.make_target(scene)
    assert tc.shape == (4, *scene.shape)
    np.testing.assert_allclose(tc[3], boundary_weights(scene))
    target = torch.from_numpy(t[None])
    perfect = torch.cat([target[:, :2], (target[:, 2:] * 2 - 1) * 20], dim=1)
    assert plain.loss(perfect, target).item() < 1e-6
    worse = perfect.clone()
    worse[:, :2] = 0
    assert plain.loss(worse, target).item() > 0.1
    tc_t = torch.from_numpy(tc[None])
    assert contour.loss(worse, tc_t).item() > plain.loss(worse, target).item()
    maps = plain.activate(perfect)
    assert maps.shape == (1, 3, *scene.shape)
    np.testing.assert_allclose(maps[0, :2].numpy(), labels_to_flows(scene)[:2], atol=1e-6)
    assert maps[0, 2].min() >= 0 and maps[0, 2].max() <= 1


def test_family_network_shapes():
    net = family(attention="scse").build_network()
    out = net(torch.zeros(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_family_postprocess_and_grid(scene):
    fam = family(min_size=0)
    grid = fam.threshold_grid()
    assert grid[0].resolved() == {"cellprob_threshold": 0.5, "flow_threshold": 0.4}
    assert {g.flow_threshold for g in grid} >= {0.0, 0.4}
    maps = labels_to_flows(scene)
    outs = [fam.postprocess(maps, g) for g in grid]
    for out in outs:
        assert score_image(scene, out, extra_thresholds=()).matching(0.5).ap == 1.0
    assert len(fam._tracked) == len({g.cellprob_threshold for g in grid})  # cached
    one = family(cellprob_threshold=[0.3], flow_threshold=[None]).threshold_grid()
    assert [g.resolved() for g in one] == [{"cellprob_threshold": 0.3, "flow_threshold": None}]
    with pytest.raises(ValueError, match="flow maps"):
        fam.postprocess(maps[:2], grid[0])
