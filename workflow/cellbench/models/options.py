"""Options of every model family: the only place their defaults are written.

Imported by the Snakefile at parse time through the registry, so this module
imports neither torch nor scikit-image. Classes:

- :class:`TrainingOptions`: the training loop's settings (every family that trains);
- :class:`NetworkOptions`: plus the segmentation-models-pytorch U-Net settings;
- :class:`ClassicalOptions`, :class:`UNetOptions`, :class:`FlowOptions`: one per family;
- ``*Thresholds``: one tuned post-processing setting of a family (what
  ``thresholds.json`` selects); their fields have no defaults: the candidates come
  from the family's options (the lists ``seed_threshold``, ``cellprob_threshold``, ...).

The defaults are the settings measured in BENCHMARKS.md (the values params.yaml uses).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from cellbench.models.encoders import SMP_ENCODERS, TIMM_PREFIX, check_encoder
from cellbench.options import Options

__all__ = [
    "ClassicalOptions",
    "EmbeddingOptions",
    "EmbeddingThresholds",
    "LSTMUNetOptions",
    "MaskRCNNOptions",
    "MaskRCNNThresholds",
    "ScaledOptions",
    "WatershedOptions",
    "ClassicalThresholds",
    "FlowOptions",
    "FlowThresholds",
    "NetworkOptions",
    "TrainingOptions",
    "UNetOptions",
    "UNetThresholds",
]

Probability = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(ge=1)]

Encoder = Annotated[
    str,
    AfterValidator(check_encoder),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(SMP_ENCODERS)},
                {"type": "string", "pattern": f"^{TIMM_PREFIX}[A-Za-z0-9_.-]+$"},
            ]
        }
    ),
]


class TrainingOptions(Options):
    """Settings of the generic training loop (:mod:`cellbench.train`)."""

    epochs: int = Field(30, ge=1, description="training epochs (passes of samples_per_epoch)")
    batch_size: int = Field(8, ge=1, description="patches per optimiser step")
    patch_size: int = Field(
        128, ge=32, multiple_of=32, description="side of the square training crops, px"
    )
    samples_per_epoch: int = Field(192, ge=1, description="random crops drawn per epoch")
    learning_rate: float = Field(
        0.003, gt=0, description="peak learning rate of the one-cycle schedule (AdamW)"
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    val_every: int = Field(1, ge=1, description="compute the validation loss every N epochs")
    patience: int = Field(
        0, ge=0, description="stop after N validations without improvement (0 = never stop early)"
    )
    scale_jitter: float = Field(
        0.0,
        ge=0,
        le=1,
        description="crops are rescaled by a random factor in [1/(1+j), 1+j] (0 = off)",
    )
    gamma_jitter: float = Field(
        0.0, ge=0, lt=1, description="random intensity gamma in [1-g, 1+g] (0 = off)"
    )
    select_by: Literal["val_loss", "val_mean_ap"] = Field(
        "val_loss",
        description="keep the epoch with the lowest val loss, or the best val mean AP after "
        "post-processing (default thresholds)",
    )
    select_every: int = Field(
        5, ge=1, description="with select_by val_mean_ap: score the val images every N epochs"
    )
    foreground_crop: Probability = Field(
        0.0,
        description="probability that a training crop is centred on an object pixel (the "
        "rest are uniform, so empty and border crops are still seen)",
    )
    balance_cell_types: Probability = Field(
        0.0,
        description="how evenly crops are drawn across the cell_type of index.csv (DSB 2018: "
        "fluorescence / brightfield / stained): each type's share goes as its image area to "
        "the power 1 - b, so 0 = by area (rare types rarely seen), 0.5 = square root, 1 = "
        "every type equally often; images within a type by area",
    )
    channels_last: bool | Literal["auto"] = Field(
        False,
        description="train with NHWC (channels-last) tensors: same numbers up to rounding; "
        "what makes bf16 convolutions fast, but 12-27 % slower than NCHW in fp32 on the CPUs "
        "measured; auto: on when the training precision resolves to bf16",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="training arithmetic: fp32, or bf16 autocast (fast on CPUs with AVX-512 "
        "BF16 / AMX and on recent GPUs, several times slower than fp32 where it is emulated, "
        "e.g. AVX2-only CPUs), or auto: bf16 where the training device computes it natively, "
        "else fp32 (the choice is logged and kept in the model's config.json). Inference is "
        "fp32",
    )
    contrast_floor: NonNegative = Field(
        0.5,
        description="empty-field guard: images are percentile-normalised, but never stretched "
        "beyond this fraction of the training images' low contrast (2nd percentile of "
        "percentile range / noise sigma; the floor is at most 20 sigma), so the noise of an "
        "empty field stays dim and gets no objects; 0 = plain percentile normalisation",
    )


class ScaledOptions(TrainingOptions):
    """A network that reads images of ``in_channels`` channels at a normalised object size."""

    in_channels: Annotated[int, Field(ge=1, le=4)] | Literal["auto"] = Field(
        1,
        description="image channels fed to the network (grey = 1, colour = 3); auto: 3 when "
        "the training data has colour images, else 1 (resolved when training)",
    )
    min_size: int = Field(15, ge=0, description="instances smaller than this (px) are removed")
    diameter: float = Field(
        0.0,
        ge=0,
        description="object diameter (px) images are rescaled to, in training and inference; "
        "0 = no rescaling",
    )
    size_estimate: Literal["regression", "segmentation"] = Field(
        "regression",
        description="how an unlabelled image's object diameter is estimated: 'regression' "
        "(a size model fitted on the training images gives a first estimate, refined by "
        "segmenting, as Cellpose's) or 'segmentation' (segment at the original size, "
        "measure, rescale, repeat)",
    )
    diameter_passes: int = Field(
        2,
        ge=1,
        le=6,
        description="network passes at most to estimate an unlabelled image's diameter "
        "(with size_estimate regression, 1 = the regression alone)",
    )
    diameter_starts: tuple[Positive, ...] = Field(
        (1.0,),
        min_length=1,
        max_length=5,
        description="multiples of the first diameter estimate (the size model's, or the "
        "original size) that the first measuring pass tries; the one whose objects measure "
        "closest to 'diameter' px at that scale is refined (the first wins near ties: "
        "within 0.1 in |log(measured / diameter)|). [1, 2, 3] also finds nuclei "
        "2-3x larger than the size model says (a network shown objects far above its "
        "training size cuts them into pieces of that size, which confirms the wrong "
        "scale); costs one network pass per extra start. Needs a measuring pass "
        "(diameter_passes >= 2 with size_estimate regression)",
    )
    tta: bool = Field(
        False, description="test-time augmentation: average the 8 flips / 90-degree rotations"
    )

    @model_validator(mode="after")
    def _starts_need_a_measuring_pass(self) -> Self:
        measuring = self.diameter_passes - (1 if self.size_estimate == "regression" else 0)
        if len(self.diameter_starts) > 1 and measuring < 1:
            raise ValueError(
                f"diameter_starts {list(self.diameter_starts)} are compared by measuring the "
                f"objects found, but diameter_passes {self.diameter_passes} with size_estimate "
                f"{self.size_estimate} makes no measuring pass: set diameter_passes to 2 or "
                "more, or diameter_starts to [1.0]"
            )
        return self


class NetworkOptions(ScaledOptions):
    """A segmentation-models-pytorch U-Net: training settings plus the architecture."""

    encoder: Encoder = Field(
        "resnet18", description="segmentation-models-pytorch encoder (or 'tu-<timm model>')"
    )
    encoder_weights: (
        Literal["imagenet", "ssl", "swsl", "instagram", "noisy-student", "advprop"] | None
    ) = Field(None, description="pretrained encoder weights (need the internet); null = random")
    encoder_depth: int = Field(4, ge=3, le=5, description="encoder stages (downsamplings)")
    decoder_channels: tuple[PositiveInt, ...] = Field(
        (64, 32, 16, 16),
        min_length=3,
        max_length=5,
        description="channels of each decoder block; the first encoder_depth are used",
    )
    attention: Literal["none", "scse"] = Field(
        "none", description="decoder attention: none or scse (spatial + channel squeeze-excite)"
    )

    @model_validator(mode="after")
    def _decoder_fits_depth(self) -> Self:
        if len(self.decoder_channels) < self.encoder_depth:
            raise ValueError(
                f"decoder_channels has {len(self.decoder_channels)} entries but encoder_depth "
                f"is {self.encoder_depth}: give at least one channel count per encoder stage"
            )
        return self


class ClassicalOptions(Options):
    """``classical``: Otsu threshold + distance-transform watershed (no network)."""

    polarity: Literal["auto", "bright", "dark"] = Field(
        "auto", description="object polarity; auto = the side of the histogram's long tail"
    )
    smooth: float = Field(1.0, ge=0, description="Gaussian sigma (px) applied before Otsu")
    min_size: int = Field(15, ge=0, description="instances smaller than this (px) are removed")
    in_channels: int = Field(1, ge=1, le=4, description="image channels read (averaged)")
    threshold_scale: tuple[Positive, ...] = Field(
        (1.0, 0.8, 0.9, 1.1, 1.2),
        min_length=1,
        description="tuning grid: factors applied to the Otsu threshold (first = default)",
    )
    min_distance: tuple[PositiveInt, ...] = Field(
        (5, 3, 4, 7, 9),
        min_length=1,
        description="tuning grid: minimum seed distance of the watershed, px (first = default)",
    )


class ClassicalThresholds(Options):
    """One tuned ``classical`` post-processing setting."""

    threshold_scale: float = Field(gt=0, description="factor applied to the Otsu threshold")
    min_distance: int = Field(ge=1, description="minimum seed distance, px")


class WatershedOptions(Options):
    """Background / interior / boundary classes and their seeded watershed (unet, lstm_unet)."""

    boundary_width: int = Field(2, ge=1, description="boundary class thickness, px")
    class_weights: tuple[NonNegative, ...] = Field(
        (1.0, 1.0, 2.0),
        min_length=3,
        max_length=3,
        description="cross-entropy weights of background, interior, boundary",
    )
    closing_radius: int = Field(
        0,
        ge=0,
        description="after the watershed, close each instance with a disk of this radius, px "
        "(0 = off)",
    )
    area_opening: int = Field(
        0,
        ge=0,
        description="after the closing, area opening: remove connected pieces of instances "
        "smaller than this, px (0 = off)",
    )
    seed_threshold: tuple[Probability, ...] = Field(
        (0.7, 0.5, 0.8, 0.9),
        min_length=1,
        description="tuning grid: interior probability that makes a seed (first = default)",
    )
    mask_threshold: tuple[Probability, ...] = Field(
        (0.5,),
        min_length=1,
        description="tuning grid: 1 - P(background) that makes a cell pixel",
    )
    split_h: tuple[NonNegative, ...] = Field(
        (1.0, 2.0, 0.0),
        min_length=1,
        description="tuning grid: h-maxima depth (px) splitting pinched seeds; 0 = no split",
    )


class UNetOptions(NetworkOptions, WatershedOptions):
    """``unet``: background / interior / boundary U-Net, seeded watershed."""


class UNetThresholds(Options):
    """One tuned ``unet`` post-processing setting."""

    seed_threshold: float = Field(ge=0, le=1, description="interior probability of a seed")
    mask_threshold: float = Field(ge=0, le=1, description="1 - P(background) of a cell pixel")
    split_h: float = Field(ge=0, description="h-maxima depth splitting pinched seeds, px")


class FlowOptions(NetworkOptions):
    """``flow``: Cellpose-style flows + cell probability, flow tracking."""

    contour_weight: float = Field(
        0.0, ge=0, description="contour-aware loss: extra weight near contours (0 = off)"
    )
    contour_sigma: float = Field(
        2.0, gt=0, description="contour-aware loss: width (px) of the weighted band"
    )
    niter: int = Field(200, ge=1, description="Euler steps of the flow tracking")
    max_size_fraction: float = Field(
        0.4, gt=0, le=1, description="masks larger than this fraction of the image are dropped"
    )
    min_seed_count: int = Field(
        10, ge=0, description="a cluster seed needs more than this many converged pixels"
    )
    postprocess_device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="device of the flow tracking"
    )
    cellprob_threshold: tuple[Probability, ...] = Field(
        (0.5, 0.3, 0.4, 0.6),
        min_length=1,
        description="tuning grid: cell probability threshold (0.5 = Cellpose's logit 0)",
    )
    flow_threshold: tuple[NonNegative | None, ...] = Field(
        (0.4, 0.6, 0.8, 0.0),
        min_length=1,
        description="tuning grid: Cellpose's flow-error quality control; 0 or null = off",
    )


class FlowThresholds(Options):
    """One tuned ``flow`` post-processing setting."""

    cellprob_threshold: float = Field(ge=0, le=1, description="cell probability threshold")
    flow_threshold: float | None = Field(
        ge=0, description="flow-error quality control threshold; 0 or null = off"
    )


class LSTMUNetOptions(ScaledOptions, WatershedOptions):
    """``lstm_unet``: U-Net with a ConvLSTM cell opening each encoder level, on frame windows."""

    frames: int = Field(
        5,
        ge=1,
        le=16,
        description="window length: each frame is predicted from itself and the frames-1 "
        "frames before it in its sequence",
    )
    encoder_channels: tuple[PositiveInt, ...] = Field(
        (16, 32, 64, 128),
        min_length=2,
        max_length=6,
        description="feature channels of each encoder level (one ConvLSTM cell + two "
        "convolutions per level; the decoder mirrors them)",
    )
    foreground_crop: Probability = Field(
        0.7,
        description="probability that a training crop is centred on an object pixel (the "
        "rest are uniform, so empty and border crops are still seen)",
    )


class EmbeddingOptions(NetworkOptions):
    """``embedding``: per-pixel embeddings + foreground map, clustered into instances."""

    embedding_dim: int = Field(8, ge=2, le=64, description="dimension of the pixel embedding")
    loss: Literal["contrastive", "discriminative"] = Field(
        "contrastive",
        description="contrastive: cosine loss on sampled pixel pairs; discriminative: pull "
        "pixels to their instance mean, push instance means apart (cosine distance)",
    )
    sampling: Literal["windowed", "uniform"] = Field(
        "windowed",
        description="contrastive pixel sampling: every object pixel of a random window "
        "(contrasts neighbouring instances) or random object pixels over the whole crop",
    )
    sample_pixels: int = Field(
        1024, ge=16, description="contrastive: pixels sampled per crop (uniform sampling)"
    )
    window_size: int = Field(
        32, ge=4, description="contrastive: side of the sampling window, px (windowed sampling)"
    )
    margin: float = Field(
        0.5,
        ge=0,
        le=2,
        description="cosine distance beyond which two pixels of different instances (or two "
        "instance means) stop being pushed apart",
    )
    pull_margin: float = Field(
        0.1,
        ge=0,
        le=2,
        description="discriminative: cosine distance to the instance mean within which a "
        "pixel is no longer pulled",
    )
    foreground_weight: float = Field(
        1.0, ge=0, description="weight of the foreground loss (BCE + Dice) in the total"
    )
    clustering: Literal["fast", "agglomerative"] = Field(
        "fast",
        description="post-processing: fast (regions without embedding boundaries as seeds, "
        "pixels grown into the most similar adjacent seed, similar neighbours merged) or "
        "agglomerative (the source's: average-linkage cosine clustering on a coarse grid, "
        "erosion, connected components, upsampling; pixels between clusters join the most "
        "similar neighbour)",
    )
    cluster_grid: int = Field(
        64,
        ge=16,
        le=512,
        description="agglomerative: the embeddings are downsampled so the longer side has "
        "this many cells",
    )
    erosion_radius: int = Field(
        1, ge=0, description="agglomerative: erosion (disk radius, grid cells) of each cluster"
    )
    foreground_threshold: tuple[Probability, ...] = Field(
        (0.5, 0.4, 0.6),
        min_length=1,
        description="tuning grid: foreground probability of an object pixel (first = default)",
    )
    distance_threshold: tuple[Annotated[float, Field(gt=0, le=2)], ...] = Field(
        (0.3, 0.2, 0.4, 0.5),
        min_length=1,
        description="tuning grid: cosine distance that separates two instances (fast: pixels "
        "up to 4 px apart that differ more mark a boundary; agglomerative: the linkage cut)",
    )


class EmbeddingThresholds(Options):
    """One tuned ``embedding`` post-processing setting."""

    foreground_threshold: float = Field(ge=0, le=1, description="foreground probability")
    distance_threshold: float = Field(gt=0, le=2, description="cosine distance cut")


class MaskRCNNOptions(ScaledOptions):
    """``maskrcnn``: torchvision Mask R-CNN, overlapping masks resolved by score."""

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = Field(
        "resnet50", description="ResNet of the FPN backbone (torchvision's Mask R-CNN: resnet50)"
    )
    pretrained_backbone: bool = Field(
        False, description="ImageNet weights for the backbone (need the internet); false = random"
    )
    learning_rate: float = Field(
        0.0003, gt=0, description="peak learning rate of the one-cycle schedule (AdamW)"
    )
    anchor_sizes: tuple[PositiveInt, ...] = Field(
        (8, 16, 32, 64, 128),
        min_length=5,
        max_length=5,
        description="anchor side (px) of each of the 5 FPN levels; torchvision's default "
        "(32 ... 512) misses nuclei",
    )
    max_detections: int = Field(
        1000, ge=1, description="detections kept per image (torchvision's default: 100)"
    )
    rpn_pre_nms_top_n: int = Field(
        6000, ge=1, description="region proposals per FPN level before NMS, at inference"
    )
    rpn_post_nms_top_n: int = Field(
        3000, ge=1, description="region proposals kept after NMS, at inference"
    )
    box_nms_threshold: float = Field(
        0.5, gt=0, le=1, description="IoU of two detections above which the weaker is dropped"
    )
    roi_batch_size: int = Field(
        128,
        ge=4,
        description="region proposals per training crop sampled for the box and mask heads "
        "(a quarter positive); torchvision's default 512 costs 2.4x per CPU step, "
        "Matterport's DSB 2018 nucleus setting is 128",
    )
    mask_threshold: float = Field(
        0.5, gt=0, lt=1, description="mask probability of an object pixel within a detection"
    )
    tta: bool = Field(
        False,
        description="not available: detections cannot be averaged over flips (must be false)",
    )
    select_by: Literal["val_loss", "val_mean_ap"] = Field(
        "val_mean_ap",
        description="keep the epoch with the best val mean AP after post-processing "
        "(default; Mask R-CNN's validation losses are computed in training mode with "
        "BatchNorm statistics that lag early on) or the lowest val loss",
    )
    score_threshold: tuple[Probability, ...] = Field(
        (0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7),
        min_length=1,
        description="tuning grid: detection score threshold (first = default)",
    )

    @model_validator(mode="after")
    def _no_tta(self) -> Self:
        if self.tta:
            raise ValueError(
                "tta: true is not available for maskrcnn (its detections cannot be averaged "
                "over flips): set tta: false"
            )
        return self


class MaskRCNNThresholds(Options):
    """One tuned ``maskrcnn`` post-processing setting."""

    score_threshold: float = Field(ge=0, le=1, description="detection score threshold")
