"""The ``maskrcnn`` family: targets, losses, dense maps, score thresholding, round trip.

Tiny settings throughout (resnet18, 64 px crops, few detections): a randomly
initialised Mask R-CNN keeps up to ``max_detections`` detections, and each one
costs a pass of the mask head.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from cellbench.config import ModelConfig
from cellbench.models import get_family
from cellbench.models.maskrcnn import (
    instance_targets,
    largest_pieces,
    paint_detections,
    threshold_maps,
)
from cellbench.models.options import MaskRCNNOptions, MaskRCNNThresholds
from tiny_networks import write_tiny_dataset

TINY_MASKRCNN = {
    "backbone": "resnet18",
    "epochs": 2,
    "batch_size": 2,
    "patch_size": 64,
    "samples_per_epoch": 4,
    "max_detections": 20,
    "rpn_pre_nms_top_n": 200,
    "rpn_post_nms_top_n": 100,
    "min_size": 4,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One torch thread: the test machines' few cores are shared."""


def family(**options):
    return get_family(ModelConfig("maskrcnn", "maskrcnn", {**TINY_MASKRCNN, **options}))


def disc_batch(seed: int = 0, n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs on a dark background: images ``(n, 1, size, size)``, ids ``(n, 1, ...)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.0, 0.05, (n, 1, size, size)).astype(np.float32)
    ids = np.zeros((n, 1, size, size), np.float32)
    for b in range(n):
        for k in range(1, 4):
            cy, cx = rng.integers(10, size - 10, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(5, 9) ** 2
            ids[b, 0][disc] = k
            images[b, 0][disc] += 1.0
    return torch.from_numpy(images), torch.from_numpy(ids)


def test_make_target_and_family_settings() -> None:
    fam = family()
    labels = np.array([[0, 3], [7, 7]], np.uint16)
    target = fam.make_target(labels)
    assert target.dtype == np.float32 and target.shape == (1, 2, 2)
    np.testing.assert_array_equal(target[0], labels)
    assert fam.categorical_targets == (0,) and fam.categorical_maps == (0, 1)
    assert fam.map_names == ("instance", "score") and not fam.blendable_maps
    assert [t.score_threshold for t in fam.threshold_grid()] == list(fam.options.score_threshold)
    assert fam.threshold_grid()[0].score_threshold == 0.5


def test_instance_targets_boxes_slivers_and_empty() -> None:
    ids = torch.zeros(16, 20)
    ids[2:5, 3:9] = 4  # a 3 x 6 box
    ids[0:10, 19] = 2  # a 1-px sliver left by the crop: dropped
    ids[15, 0:10] = 5  # a 1-px sliver along the bottom: dropped
    ids[8:10, 8:9] = 6  # 2 pixels: dropped
    t = instance_targets(ids)
    assert t["boxes"].tolist() == [[3.0, 2.0, 9.0, 5.0]]  # [x0, y0, x1 + 1, y1 + 1]
    assert t["labels"].tolist() == [1] and t["masks"].dtype == torch.uint8
    assert t["masks"].shape == (1, 16, 20) and int(t["masks"].sum()) == 18
    empty = instance_targets(torch.zeros(16, 20))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 16, 20)
    assert empty["labels"].shape == (0,)


def test_training_loss_handles_empty_crops_and_slivers() -> None:
    torch.manual_seed(0)
    fam = family()
    net = fam.build_network().train()
    images, ids = disc_batch(1)
    ids[0] = 0  # a crop without any instance
    ids[1] = 0
    ids[1, 0, :, 0] = 3  # only slivers cut by the crop border
    ids[1, 0, 63, 10:40] = 4
    loss = fam.training_loss(net, images, ids)
    assert torch.isfinite(loss)
    loss.backward()  # the empty targets still give a graph (background only)


def test_loss_decreases_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    fam = family(roi_batch_size=64)
    net = fam.build_network(load_weights=False).train()
    # the option reaches torchvision's sampler of regions for the box / mask heads
    assert net.model.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    images, ids = disc_batch(2)
    opt = torch.optim.AdamW(net.parameters(), lr=fam.options.learning_rate)
    losses = []
    for _ in range(6):
        loss = fam.training_loss(net, images, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    # the untrained heads start near chance (mask BCE ~ log 2), not at a huge loss
    assert losses[0] < 5.0, losses
    assert np.mean(losses[-2:]) < 0.75 * np.mean(losses[:2]), losses


def test_eval_maps_are_ranked_detections() -> None:
    torch.manual_seed(1)
    fam = family()
    net = fam.build_network().eval()
    images, _ = disc_batch(3)
    with torch.no_grad():
        maps = fam.activate(net(images))
        detections = net.model(list(images))
    assert maps.shape == (2, 2, 64, 64) and maps.dtype == torch.float32
    for m, d in zip(maps, detections, strict=True):
        scores = torch.sort(d["scores"], descending=True).values
        ids = m[0].long()
        assert 0 < len(scores) <= 20 and ids.max() > 0
        assert torch.all(m[1][ids == 0] == 0)
        for k in torch.unique(ids[ids > 0]).tolist():
            # every pixel of detection k holds the k-th best score
            assert torch.all(m[1][ids == k] == scores[k - 1])


def test_validation_loss_leaves_batchnorm_statistics_and_random_state() -> None:
    torch.manual_seed(2)
    fam = family()
    net = fam.build_network()
    net.train()
    images, ids = disc_batch(4)
    fam.training_loss(net, images, ids)  # the running statistics move once
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.no_grad():
        first = fam.validation_loss(net, images[:1], ids[:1, :, :50, :60], (50, 60))
        second = fam.validation_loss(net, images[:1], ids[:1, :, :50, :60], (50, 60))
    assert torch.isfinite(first) and float(first) == float(second)
    assert not net.training
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_postprocess_two_overlapping_detections() -> None:
    fam = family(min_size=1)
    maps = np.zeros((2, 12, 12), np.float32)
    maps[:, 6:10, 6:10] = [[[2.0]], [[0.4]]]  # the weaker detection, partly covered
    maps[:, 2:8, 2:8] = [[[1.0]], [[0.9]]]  # the stronger one paints over it
    strong = np.zeros((12, 12), np.int32)
    strong[2:8, 2:8] = 1
    np.testing.assert_array_equal(
        fam.postprocess(maps, MaskRCNNThresholds(score_threshold=0.5)), strong
    )
    both = strong.copy()
    both[6:10, 6:10][strong[6:10, 6:10] == 0] = 2
    labels = fam.postprocess(maps, MaskRCNNThresholds(score_threshold=0.4))
    np.testing.assert_array_equal(labels, both)
    assert labels.dtype == np.int32
    assert not fam.postprocess(maps, MaskRCNNThresholds(score_threshold=0.95)).any()


def test_postprocess_keeps_largest_piece_and_drops_small() -> None:
    ids = np.zeros((10, 10), np.int64)
    ids[0:4, 0:4] = 3  # the larger piece of instance 3
    ids[8:10, 8:10] = 3  # a sliver of it elsewhere: removed
    ids[0:2, 7:9] = 5  # small instance, 4 px
    kept = largest_pieces(ids)
    assert (kept == 3).sum() == 16 and (kept == 5).sum() == 4
    maps = np.stack([ids, np.where(ids > 0, 0.8, 0.0)]).astype(np.float32)
    labels = family(min_size=5).postprocess(maps, MaskRCNNThresholds(score_threshold=0.5))
    assert labels.max() == 1 and (labels == 1).sum() == 16


def test_thresholded_maps_equal_painting_the_kept_detections() -> None:
    gen = torch.Generator().manual_seed(0)
    n, h, w = 40, 48, 56
    corner = torch.rand(n, 2, generator=gen) * torch.tensor([w - 4.0, h - 4.0])
    side = 3 + torch.rand(n, 2, generator=gen) * 18
    boxes = torch.cat([corner, corner + side], dim=1)
    scores = torch.rand(n, generator=gen)
    masks = torch.rand(n, 1, 28, 28, generator=gen)
    maps = paint_detections(boxes, scores, masks, (h, w), 0.5)
    assert (maps[0] > 0).any()
    for t in (0.0, 0.2, 0.5, 0.8, 0.99):
        keep = scores >= t
        expected = paint_detections(boxes[keep], scores[keep], masks[keep], (h, w), 0.5)
        np.testing.assert_array_equal(threshold_maps(maps.numpy(), t), expected[0].numpy())
        kept = maps[1] >= t
        np.testing.assert_array_equal(maps[1][kept].numpy(), expected[1][kept].numpy())


def test_pretrained_backbone_offline_error_and_channels(monkeypatch) -> None:
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="pretrained_backbone: false"):
        family(pretrained_backbone=True).build_network()
    # the architecture without the download (loading a trained model's weights)
    grey = family(pretrained_backbone=True).build_network(load_weights=False)
    assert grey.channels == 3 and grey.model.backbone.body.conv1.in_channels == 3
    two = family(pretrained_backbone=True, in_channels=2).build_network(load_weights=False)
    assert two.model.backbone.body.conv1.in_channels == 2
    random_grey = family().build_network()
    assert random_grey.channels == 1 and random_grey.model.backbone.body.conv1.in_channels == 1
    assert isinstance(random_grey.model.backbone.body.bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in random_grey.parameters())


def test_train_predict_postprocess_round_trip(tmp_path: Path) -> None:
    import tifffile
    from cellbench.io import read_json, read_labels
    from cellbench.predict import postprocess_dir, predict_dir
    from cellbench.train import train_model

    converted, split = write_tiny_dataset(
        tmp_path / "converted", tmp_path / "split.csv", splits=("train", "train", "val", "test")
    )
    cfg = ModelConfig("maskrcnn", "maskrcnn", {**TINY_MASKRCNN, "samples_per_epoch": 2})
    out = tmp_path / "model"
    config = train_model(cfg, "tiny", converted, split, out, seed=0, device="cpu", progress=False)
    assert config["epochs_run"] == 2 and config["map_names"] == ["instance", "score"]
    tuned = read_json(out / "thresholds.json")
    assert set(tuned["selected"]) == {"score_threshold"}
    assert len(tuned["grid"]) == len(MaskRCNNOptions().score_threshold)
    assert predict_dir(out, converted, split, tmp_path / "pred", device="cpu") == 1
    maps = tifffile.imread(tmp_path / "pred" / "img3.tif")
    assert maps.shape == (2, 80, 96) and maps.dtype == np.float32
    assert postprocess_dir(out, tmp_path / "pred", tmp_path / "masks") == 1
    labels = read_labels(tmp_path / "masks" / "img3.tif")
    assert labels.shape == (80, 96)
