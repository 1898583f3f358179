"""Options of every dataset source (``datasets.<name>.options`` in params.yaml).

The only place their defaults are written. Imported at Snakefile parse time
through the registry, so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cellbench.options import Options

__all__ = [
    "BBBC007Options",
    "BBBC009Options",
    "BBBC018Options",
    "BBBC041Options",
    "CTCOptions",
    "DSB2018Options",
    "FolderOptions",
    "LIVECellOptions",
    "NoOptions",
    "OutlineOptions",
    "SartoriusOptions",
    "SyntheticOptions",
]

Sequence_ = Annotated[str, Field(pattern=r"^[0-9]{2,}$")] | Annotated[int, Field(ge=0)]


class NoOptions(Options):
    """A source without options."""


class SyntheticOptions(Options):
    """``synthetic``: size and difficulty of the generated images."""

    n_images: int = Field(48, ge=3, description="images generated")
    height: int = Field(256, ge=32, description="image height, px")
    width: int = Field(256, ge=32, description="image width, px")
    looks: tuple[Literal["fluorescent", "phase"], ...] = Field(
        ("fluorescent", "phase"),
        min_length=1,
        description="image styles, used in turn: fluorescent nuclei, phase-contrast cells",
    )
    n_cells: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = Field(
        (15, 40), description="(min, max) cells attempted per image"
    )
    radius: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (7.0, 16.0), description="(min, max) mean cell radius, px"
    )
    cluster_fraction: float = Field(
        0.5, ge=0, le=1, description="share of cells placed touching an existing cell"
    )
    noise: float = Field(1.0, gt=0, description="noise level (1.0 = default difficulty)")


class DSB2018Options(Options):
    """``dsb2018``: Kaggle Data Science Bowl 2018."""

    include_test: bool = Field(
        True, description="convert the stage-1 test images (scored with the official solution)"
    )
    drop_alpha: bool = Field(True, description="drop the constant alpha channel of the PNGs")
    image_types: tuple[Literal["fluorescence", "brightfield", "stained"], ...] | None = Field(
        None,
        min_length=1,
        description="keep only these image classes (null: all), e.g. [fluorescence] for the "
        "fluorescent subset",
    )


class SartoriusOptions(Options):
    """``sartorius``: Kaggle Sartorius Cell Instance Segmentation 2021."""

    rle_order: Literal["row", "column"] = Field(
        "row", description="pixel order of the run-length encoding in train.csv"
    )
    cell_types: tuple[Literal["shsy5y", "astro", "cort"], ...] | None = Field(
        None, min_length=1, description="convert only these cell types (null = all)"
    )


class CTCOptions(Options):
    """``ctc``: a Cell Tracking Challenge 2D training dataset."""

    name: str = Field(
        pattern=r"^(BF|DIC|Fluo|PhC)-[A-Za-z0-9+-]+$",
        description="CTC dataset name, e.g. DIC-C2DH-HeLa",
    )
    truth: Literal["GT", "ST"] = Field(
        "GT", description="segmentation truth: GT (gold, partial) or ST (silver, complete)"
    )
    sequences: tuple[Sequence_, ...] | None = Field(
        None, min_length=1, description="sequences to convert, e.g. ['01'] (null = all)"
    )
    test_sequence: Annotated[str, Field(pattern=r"^(auto|none|[0-9]{2,})$")] | int | None = Field(
        "auto", description="sequence held out as the test split: auto, none or e.g. '02'"
    )
    annotation: Literal["full", "partial"] | None = Field(
        None, description="override the annotation level (null: ST and simulated GT full)"
    )
    frame_blocks: int | None = Field(
        None, ge=1, description="split each sequence into this many time blocks (split groups)"
    )
    train_truth: Literal["GT", "ST"] | None = Field(
        None,
        description="truth the networks train on when it differs from 'truth' (the scored "
        "one): e.g. truth GT + train_truth ST trains on silver truth, scores on gold; "
        "null = the same",
    )
    context_frames: bool = Field(
        False,
        description="also convert the frames without any truth, unannotated, as time "
        "context for models that read frame windows (lstm_unet)",
    )


class OutlineOptions(Options):
    """Sources annotated with outlines (BBBC007, BBBC009, BBBC018)."""

    min_area: int = Field(30, ge=0, description="regions smaller than this (px) are dropped")
    outline_pixels: Literal["assign", "background"] = Field(
        "assign", description="outline pixels join the nearest cell (assign) or stay background"
    )
    drop_gaps: bool = Field(
        True,
        description="drop background gaps walled in by touching outlined cells (not cells)",
    )


class BBBC009Options(OutlineOptions):
    """``bbbc009``: red blood cells (DIC) with outlines."""


class BBBC007Options(OutlineOptions):
    """``bbbc007``: Drosophila Kc167 cells, DNA / actin with outlines."""

    target: Literal["nuclei", "cells"] = Field(
        "nuclei", description="nuclei (DNA image) or cells (actin image)"
    )


class BBBC018Options(BBBC007Options):
    """``bbbc018``: HT29 cells (DNA / actin / pH3 DIB) with outlines."""

    all_channels: bool = Field(False, description="stack DNA, actin, pH3 as the image")
    flip_outlines: bool = Field(
        False, description="flip the outline images vertically (if they do not line up)"
    )


class BBBC041Options(Options):
    """``bbbc041``: malaria smears, bounding boxes only."""

    boxes_as_masks: bool = Field(
        False, description="write the boxes as filled rectangles (a rough mask)"
    )


class LIVECellOptions(Options):
    """``livecell``: LIVECell (COCO polygons)."""

    subsets: tuple[Literal["train", "val", "test"], ...] = Field(
        ("train", "val", "test"), min_length=1, description="LIVECell subsets to convert"
    )
    cell_types: (
        tuple[Literal["A172", "BT474", "BV2", "Huh7", "MCF7", "SHSY5Y", "SkBr3", "SKOV3"], ...]
        | None
    ) = Field(None, min_length=1, description="convert only these cell lines (null = all)")


class FolderOptions(Options):
    """``folder``: the user's own annotated images."""

    layout: Literal["auto", "cellpose", "images_labels"] = Field(
        "auto", description="*_img/*_masks pairs (cellpose), images/ + labels/, or auto"
    )
    cell_type: str = Field("unknown", description="cell_type recorded for every image")
    annotation: Literal["full", "partial"] = Field(
        "full", description="full (every cell labelled) or partial"
    )
    group_regex: str | None = Field(
        None, description="regex whose first group (or match) of the file name is the split group"
    )
