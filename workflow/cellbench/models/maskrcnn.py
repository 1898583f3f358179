"""``maskrcnn``: torchvision Mask R-CNN with a ResNet-FPN backbone (detection-first baseline).

Target (:meth:`MaskRCNN.make_target`): the instance ids ``(1, H, W)`` float32
(0 = background), a categorical channel, so random crops, flips and nearest
resizing keep ids intact. Each training crop's ids become torchvision detection
targets (:func:`instance_targets`): one box ``[x0, y0, x1 + 1, y1 + 1]`` (pixel
bounds, exclusive end), label 1 and a uint8 mask per instance; instances that a
crop cut to slivers (box side < ``MIN_BOX_SIDE`` px or fewer than ``MIN_PIXELS``
pixels) are dropped. Loss: the sum of torchvision's five losses (RPN objectness
and box regression, box classifier and regression, mask BCE).

Maps (what the network returns in eval mode and the predict stage saves),
``(2, H, W)`` float32:

- ``instance``: at each pixel the rank ``k`` (1 = best score) of the
  highest-scoring detection whose binarised mask (mask probability >
  ``mask_threshold``) covers the pixel, 0 where none does;
- ``score``: that detection's score, 0 where none.

Because a pixel keeps its highest-scoring covering detection, thresholding the
maps at a score ``t`` (keep pixels with ``score >= t``) gives exactly the labels
of "keep the detections with score >= t, resolve overlaps in favour of the
higher score": the score threshold is tuned on the validation maps without
running the network again. Post-processing (:meth:`MaskRCNN.postprocess`): that
threshold, then each instance keeps its largest 4-connected piece (overlap
painting can leave slivers), instances smaller than ``min_size`` px are dropped,
ids are renumbered 1..N. The maps are ids and per-instance values: they are
resized with nearest neighbour (``categorical_maps``) and never tiled or averaged
(``blendable_maps = False``: images are predicted whole, no TTA).

Network (:func:`build_maskrcnn`): torchvision's ``MaskRCNN`` (2 classes) on a
ResNet-FPN backbone (``backbone``) with

- no resizing: torchvision's transform rescales every image to 800 px; here the
  images are used at their own scale (size normalisation is the ``diameter``
  option's job) and are already normalised (``image_mean`` 0, ``image_std`` 1);
- anchors ``anchor_sizes`` (one per FPN level), aspect ratios 0.5, 1, 2;
- inference limits ``rpn_pre_nms_top_n`` (per level), ``rpn_post_nms_top_n``,
  ``max_detections``, box NMS at ``box_nms_threshold``, and a low score floor
  (``SCORE_FLOOR`` or the lowest tuning candidate), since the score threshold is
  tuned later on the maps; training keeps torchvision's proposal numbers (2000)
  and samples ``roi_batch_size`` of them per crop for the heads (torchvision: 512).
- random initialisation (default): every layer trainable, ordinary BatchNorm,
  the first convolution reads ``in_channels`` channels. ``pretrained_backbone:
  true``: torchvision's ImageNet ResNet weights (need the internet), frozen
  BatchNorm and the stem + ``layer1`` frozen (torchvision's fine-tuning recipe);
  a grey image (``in_channels: 1``) is repeated to 3 channels in the forward pass,
  2 or 4 channels get a first convolution built from the RGB filters (cycled,
  scaled by 3 / channels).

Options: :class:`cellbench.models.options.MaskRCNNOptions` (``cellbench options
maskrcnn`` prints every one with its type, default and description).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import label
from torch import nn
from torchvision.models import get_model_weights
from torchvision.models.detection import MaskRCNN as TorchMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from cellbench.models.base import ModelFamily
from cellbench.models.options import MaskRCNNOptions, MaskRCNNThresholds
from cellbench.postprocess.watershed import clean_labels

__all__ = [
    "MIN_BOX_SIDE",
    "MIN_PIXELS",
    "SCORE_FLOOR",
    "MaskRCNN",
    "MaskRCNNNet",
    "build_maskrcnn",
    "instance_targets",
    "largest_pieces",
    "paint_detections",
    "threshold_maps",
]

#: instances of a training crop with a box side below this (px) are not targets.
MIN_BOX_SIDE = 2
#: instances of a training crop with fewer pixels than this are not targets.
MIN_PIXELS = 4
#: detections scoring below this are never kept (lowered to the lowest tuning candidate).
SCORE_FLOOR = 0.05
#: torchvision's number of region proposals per level before / after NMS in training.
TRAIN_PRE_NMS_TOP_N = 2000
TRAIN_POST_NMS_TOP_N = 2000


# -- targets ---------------------------------------------------------------------------
def instance_targets(ids, *, min_pixels: int = MIN_PIXELS, min_side: int = MIN_BOX_SIDE) -> dict:
    """Instance ids of one crop -> a torchvision detection target.

    Parameters
    ----------
    ids : torch.Tensor
        ``(h, w)`` instance ids (any dtype holding integers), 0 = background.
    min_pixels, min_side : int
        Instances with fewer pixels, or whose box is narrower or lower than
        ``min_side`` px, are dropped (slivers left by a crop).

    Returns
    -------
    dict
        ``boxes`` ``(N, 4)`` float32 ``[x0, y0, x1 + 1, y1 + 1]`` (pixel bounds,
        exclusive end), ``labels`` ``(N,)`` int64 (all 1), ``masks`` ``(N, h, w)``
        uint8, on the device of ``ids``, instances in increasing id order. An image
        without instances gives ``N = 0`` (boxes ``(0, 4)``, masks ``(0, h, w)``).
    """
    h, w = ids.shape
    ids = torch.round(ids).long() if ids.is_floating_point() else ids.long()
    flat = ids.reshape(-1)
    pixels = torch.nonzero(flat > 0).squeeze(1)
    values, inverse, counts = torch.unique(flat[pixels], return_inverse=True, return_counts=True)
    n = values.numel()
    ys, xs = pixels // w, pixels % w

    def bound(coords, size: int, reduce: str):
        fill = size if reduce == "amin" else -1
        start = torch.full((n,), fill, dtype=torch.long, device=ids.device)
        return start.scatter_reduce(0, inverse, coords, reduce)

    x0, x1 = bound(xs, w, "amin"), bound(xs, w, "amax")
    y0, y1 = bound(ys, h, "amin"), bound(ys, h, "amax")
    keep = (counts >= min_pixels) & (x1 - x0 + 1 >= min_side) & (y1 - y0 + 1 >= min_side)
    boxes = torch.stack([x0, y0, x1 + 1, y1 + 1], dim=1)[keep].float()
    kept = values[keep]
    masks = (ids[None] == kept[:, None, None]).to(torch.uint8)
    labels = torch.ones(kept.numel(), dtype=torch.int64, device=ids.device)
    return {"boxes": boxes.reshape(-1, 4), "labels": labels, "masks": masks}


# -- maps ------------------------------------------------------------------------------
def paint_detections(boxes, scores, masks, size: tuple[int, int], mask_threshold: float):
    """Paint detections into dense maps, a pixel keeping its highest-scoring detection.

    Each mask is pasted into its box as torchvision does (one pixel of padding,
    bilinear resizing; :func:`torchvision.models.detection.roi_heads.paste_masks_in_image`)
    but only within the box, so memory stays ``O(H W)`` whatever the number of
    detections. Detections are painted from the lowest score to the highest, so a
    later (better) one overwrites.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` ``[x0, y0, x1, y1]`` in pixels of the image.
    scores : torch.Tensor
        ``(N,)`` detection scores.
    masks : torch.Tensor
        ``(N, 1, M, M)`` mask probabilities in box coordinates (torchvision's
        ``roi_heads`` output before pasting).
    size : (int, int)
        ``(H, W)`` of the image.
    mask_threshold : float
        A pixel belongs to a detection where its mask probability exceeds this.

    Returns
    -------
    torch.Tensor
        ``(2, H, W)`` float32 on the device of ``boxes``: channel 0 the rank
        ``k = 1..N`` of the detection in descending score order (0 = none),
        channel 1 its score (0 = none). Since a pixel keeps its best covering
        detection, ``score >= t`` on these maps selects exactly the pixels that
        painting only the detections scoring at least ``t`` would cover, with the
        same ranks (:func:`threshold_maps`).
    """
    h, w = size
    maps = torch.zeros((2, h, w), dtype=torch.float32, device=boxes.device)
    if boxes.shape[0] == 0:
        return maps
    order = torch.argsort(scores, descending=True, stable=True)
    scores = scores[order].float()
    padded, scale = expand_masks(masks[order], padding=1)
    corners = expand_boxes(boxes[order], scale).to(dtype=torch.int64).tolist()
    instance, score = maps[0], maps[1]
    for k in range(len(corners) - 1, -1, -1):  # lowest score first: better ones overwrite
        x0, y0, x1, y1 = corners[k]
        bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        cx0, cx1, cy0, cy1 = max(x0, 0), min(x1 + 1, w), max(y0, 0), min(y1 + 1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        pasted = F.interpolate(
            padded[k : k + 1], size=(bh, bw), mode="bilinear", align_corners=False
        )
        inside = pasted[0, 0, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > mask_threshold
        instance[cy0:cy1, cx0:cx1].masked_fill_(inside, float(k + 1))
        score[cy0:cy1, cx0:cx1].masked_fill_(inside, scores[k])
    return maps


def threshold_maps(maps: np.ndarray, score_threshold: float) -> np.ndarray:
    """The instance ids of the maps where the score is at least ``score_threshold``.

    Parameters
    ----------
    maps : ``(2, H, W)`` (instance rank, score), as :func:`paint_detections` returns.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int64 detection ranks (not renumbered), 0 = background: the labels
        of the detections scoring at least ``score_threshold``, overlaps resolved by score.
    """
    maps = np.asarray(maps)
    ids = np.rint(maps[0]).astype(np.int64)
    ids[~(maps[1] >= score_threshold)] = 0
    return ids


def largest_pieces(ids: np.ndarray) -> np.ndarray:
    """Keep, of each instance of ``(H, W)`` integer ids, only its largest 4-connected piece."""
    ids = np.asarray(ids)
    if not ids.any():
        return ids.copy()
    pieces = label(ids, background=0, connectivity=1)
    areas = np.bincount(pieces.ravel())
    owner = np.zeros(areas.size, dtype=ids.dtype)
    owner[pieces.ravel()] = ids.ravel()  # every pixel of a piece has the same id
    candidates = np.arange(1, areas.size)
    by_size = candidates[np.argsort(-areas[1:], kind="stable")]
    _, first = np.unique(owner[by_size], return_index=True)
    keep = np.zeros(areas.size, dtype=bool)
    keep[by_size[first]] = True
    return np.where(keep[pieces], ids, 0)


# -- network ---------------------------------------------------------------------------
class _AtOwnScale(GeneralizedRCNNTransform):
    """torchvision's detection transform that never resizes and never pastes masks.

    Images are normalised with the given mean / std (0 / 1 here: inputs are already
    normalised) and batched with zero padding to a multiple of 32. ``postprocess``
    leaves the masks as ``(N, 1, 28, 28)`` probabilities in box coordinates:
    :func:`paint_detections` pastes them box by box instead of allocating
    ``(N, H, W)``; boxes stay in image pixels (there was no resizing).
    """

    def resize(self, image, target=None):
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


class MaskRCNNNet(nn.Module):
    """torchvision Mask R-CNN taking a batch tensor and returning dense maps.

    ``forward(x)`` in eval mode: ``x`` ``(B, in_channels, H, W)`` float32 -> maps
    ``(B, 2, H, W)`` float32 (instance rank, score; see :func:`paint_detections`):
    channel 0 at each pixel the rank ``k = 1..N`` (descending score) of the
    highest-scoring detection whose binarised mask (probability > ``mask_threshold``)
    covers it, 0 where none; channel 1 that detection's score, 0 where none. As a
    pixel keeps its highest-scoring covering detection, thresholding these maps at a
    score ``t`` gives exactly the labels of "keep the detections with score >= t,
    resolve overlaps by score". In training mode ``forward(x, targets)`` returns
    torchvision's loss dict (``targets``: one :func:`instance_targets` dict per image).

    Attributes
    ----------
    model : torchvision.models.detection.MaskRCNN
    in_channels : channels of ``x``.
    channels : channels the backbone reads (3 when a grey image is repeated to RGB
        for a pretrained backbone, else ``in_channels``).
    mask_threshold : mask probability above which a pixel belongs to a detection.
    """

    def __init__(self, model, in_channels: int, channels: int, mask_threshold: float) -> None:
        super().__init__()
        self.model = model
        self.in_channels = int(in_channels)
        self.channels = int(channels)
        self.mask_threshold = float(mask_threshold)

    def _images(self, x) -> list:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Mask R-CNN expects (B, {self.in_channels}, H, W) images, got {tuple(x.shape)}"
            )
        if self.channels != self.in_channels:  # grey into a pretrained RGB backbone
            x = x.expand(-1, self.channels, -1, -1)
        return list(x.float().unbind(0))

    def forward(self, x, targets: list[dict] | None = None):
        images = self._images(x)
        if self.training:
            if targets is None:
                raise ValueError("Mask R-CNN in training mode needs targets (it returns losses)")
            return self.model(images, targets)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return torch.stack(
            [
                paint_detections(d["boxes"], d["scores"], d["masks"], size, self.mask_threshold)
                for d in self.model(images)
            ]
        )


def _first_conv(old: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of the ResNet stem convolution reading ``in_channels`` channels.

    Random initialisation: fresh weights (ResNet's Kaiming init). Pretrained: the RGB
    filters cycled over the new channels and scaled by ``3 / in_channels``.
    """
    conv = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=False,
    )
    if pretrained:
        with torch.no_grad():
            index = [i % old.in_channels for i in range(in_channels)]
            conv.weight.copy_(old.weight[:, index] * (old.in_channels / in_channels))
    else:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    conv.weight.requires_grad_(old.weight.requires_grad)
    return conv


def _backbone(options: MaskRCNNOptions, load_weights: bool) -> tuple[nn.Module, int]:
    """The ResNet-FPN backbone and the number of channels it reads.

    The architecture follows ``options.pretrained_backbone`` (frozen BatchNorm, stem
    and ``layer1`` frozen, grey repeated to RGB); the ImageNet weights are
    downloaded only when ``load_weights`` is also true.
    """
    pretrained = bool(options.pretrained_backbone)
    in_channels = int(options.in_channels)
    weights = None
    if pretrained and load_weights:
        weights = get_model_weights(options.backbone).IMAGENET1K_V1
    try:
        backbone = resnet_fpn_backbone(
            backbone_name=options.backbone,
            weights=weights,
            norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
            trainable_layers=3 if pretrained else 5,
        )
    except (OSError, ConnectionError, RuntimeError) as exc:
        if weights is not None:
            raise RuntimeError(
                f"could not load ImageNet weights for backbone '{options.backbone}' ({exc}). "
                "Pretrained weights need the internet: set 'pretrained_backbone: false' in "
                "params.yaml to train from random initialisation."
            ) from exc
        raise
    if pretrained and in_channels == 1:
        return backbone, 3  # the grey channel is repeated to RGB in the forward pass
    body = backbone.body
    if in_channels != body.conv1.in_channels:
        body.conv1 = _first_conv(body.conv1, in_channels, pretrained)
    return backbone, in_channels


def build_maskrcnn(options: MaskRCNNOptions, *, load_weights: bool = True) -> MaskRCNNNet:
    """The Mask R-CNN network of the options (see the module docstring).

    Parameters
    ----------
    options : MaskRCNNOptions
        ``in_channels`` must be a number (``auto`` is resolved when training).
    load_weights : bool
        With ``pretrained_backbone: true``, download the ImageNet backbone weights.
        ``False`` builds the same architecture with random weights (for loading a
        trained model's ``weights.pt`` without the internet).

    Raises
    ------
    RuntimeError
        When the pretrained backbone weights cannot be downloaded.
    """
    backbone, channels = _backbone(options, load_weights)
    sizes = tuple((int(s),) for s in options.anchor_sizes)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
    floor = min(SCORE_FLOOR, *(float(t) for t in options.score_threshold))
    mean, std = [0.0] * channels, [1.0] * channels
    model = TorchMaskRCNN(
        backbone,
        num_classes=2,
        image_mean=mean,
        image_std=std,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=TRAIN_PRE_NMS_TOP_N,
        rpn_post_nms_top_n_train=TRAIN_POST_NMS_TOP_N,
        rpn_pre_nms_top_n_test=options.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_test=options.rpn_post_nms_top_n,
        box_score_thresh=floor,
        box_nms_thresh=options.box_nms_threshold,
        box_detections_per_img=options.max_detections,
        box_batch_size_per_image=options.roi_batch_size,
    )
    model.transform = _AtOwnScale(min_size=1, max_size=1, image_mean=mean, image_std=std)
    _init_predictors(model)
    return MaskRCNNNet(model, int(options.in_channels), channels, options.mask_threshold)


def _init_predictors(model) -> None:
    """Detectron2's initialisation of the output layers (torchvision's is much wider).

    torchvision initialises the 1x1 mask-logit convolution with Kaiming (fan-out 2:
    weights of std 1 over 256 channels), so an untrained head starts with logits of
    std ~20 and a mask loss ~10 that destabilises training from scratch. As
    Detectron2: mask logits and box regression std 0.001, class scores std 0.01,
    biases 0.
    """
    predictor = model.roi_heads.box_predictor
    for layer, std in (
        (model.roi_heads.mask_predictor.mask_fcn_logits, 0.001),
        (predictor.cls_score, 0.01),
        (predictor.bbox_pred, 0.001),
    ):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


@contextlib.contextmanager
def _losses_without_updates(net: nn.Module, device: torch.device):
    """Training mode (torchvision computes losses only then) with BatchNorm frozen.

    Every BatchNorm layer stays in eval mode, so its running statistics are used
    and not updated; the proposal sampling draws from a fixed seed in a forked
    random state, so the loss is a function of the weights and the training's
    random streams are untouched. Restores eval mode on exit.
    """
    cuda = device.type == "cuda"
    devices = (
        [torch.cuda.current_device() if device.index is None else device.index] if cuda else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(0)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(0)
        net.train()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            net.eval()


# -- the family ------------------------------------------------------------------------
class MaskRCNN(ModelFamily):
    """torchvision Mask R-CNN: detections painted into (instance rank, score) maps."""

    family = "maskrcnn"
    categorical_targets = (0,)
    map_names = ("instance", "score")
    categorical_maps = (0, 1)
    blendable_maps = False

    def build_network(self, *, load_weights: bool = True) -> MaskRCNNNet:
        """:func:`build_maskrcnn` of the options (``load_weights``: see there)."""
        return build_maskrcnn(self.options, load_weights=load_weights)

    def make_target(self, labels: np.ndarray) -> np.ndarray:
        """``(1, H, W)`` float32 instance ids (0 = background)."""
        return np.asarray(labels)[None].astype(np.float32)

    def _targets(self, target) -> list[dict]:
        return [instance_targets(t[0]) for t in target]

    def training_loss(self, net, images, target):
        """Sum of torchvision's losses; ``target`` ``(B, 1, h, w)`` instance ids per crop."""
        return sum(net(images, self._targets(target)).values())

    def validation_loss(self, net, images, target, size: tuple[int, int]):
        """The training loss of one padded image, without updating BatchNorm statistics.

        ``target`` ``(1, 1, H, W)`` is padded with zeros (background) at the bottom /
        right to the size of ``images``. The network is left in eval mode.
        """
        h, w = size
        pad_h, pad_w = images.shape[-2] - h, images.shape[-1] - w
        target = F.pad(target, (0, pad_w, 0, pad_h))
        with _losses_without_updates(net, images.device):
            return sum(net(images, self._targets(target)).values())

    def activate(self, logits):
        """The maps as the network returns them (instance rank, score)."""
        return logits

    def postprocess(self, maps: np.ndarray, thresholds: MaskRCNNThresholds) -> np.ndarray:
        """Score threshold, largest piece per instance, ``min_size``, ids renumbered 1..N.

        Parameters
        ----------
        maps : ``(2, H, W)`` (instance rank, score).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` int32 labels, 0 = background, ids 1..N in descending score order.
        """
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or maps.shape[0] != 2:
            raise ValueError(f"maskrcnn maps must be (2, H, W) (instance, score), got {maps.shape}")
        ids = largest_pieces(threshold_maps(maps, thresholds.score_threshold))
        return clean_labels(ids, min_size=self.options.min_size, fill_holes=False)

    def threshold_grid(self) -> list[MaskRCNNThresholds]:
        return self.candidates(score_threshold=self.options.score_threshold)
