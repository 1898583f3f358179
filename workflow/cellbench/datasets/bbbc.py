"""Broad Bioimage Benchmark Collection sets: BBBC039, BBBC009, BBBC007, BBBC018, BBBC041.

All are fetched over HTTP from ``https://data.broadinstitute.org/bbbc/<SET>/`` and
checked against ``checksums.yaml`` (see each class for the files and layouts).

Outline ground truth (BBBC009, BBBC007, BBBC018) is turned into instances by one rule,
:func:`outlines_to_labels`: the regions enclosed by the outline strokes are the cells.

1. Enclosed regions are the **4-connected** components of the non-outline pixels that
   do not reach the image border (8-connectivity would leak through diagonal strokes
   and merge touching cells). The free pixels that reach the border are the
   *background*.
2. Enclosed regions smaller than ``min_area`` pixels (default 30) are the little gaps
   where strokes cross or run side by side, not cells, and are dropped.
3. **Gaps enclosed by touching cells are dropped** (:func:`enclosed_gaps`): where three
   or more outlined cells touch, the space between them is enclosed too, but its wall
   is made of pieces of the *other* cells' outlines rather than one closed stroke of
   its own. Every stroke pixel is given to the nearest region (a region's *territory*
   is the region plus the strokes nearer to it than to any other region, the
   background counting as one region). A region is a gap when (a) at most
   :data:`GAP_MAX_BACKGROUND` (10 %) of the border of its territory touches the
   background, i.e. it is walled in, (b) at least :data:`GAP_MIN_NEIGHBOURS` (2)
   enclosed regions larger than it share that wall, and (c) it is clearly not
   convex: its area is below :data:`GAP_MAX_SOLIDITY` (80 %) of its convex hull.
   (c) follows from the geometry: the wall of a gap is the outer, convex side of the
   cells around it, so the gap curves inwards (a gap between three or four touching
   round cells fills 40-45 % of its convex hull as a continuous drawing, 55-70 % when
   drawn with 1-px strokes on the pixel grid; a cell 95 % or more). (b) and (c) keep
   a convex cell that is completely surrounded by other cells. ``drop_gaps=False``
   turns the rule off.
4. With ``outline_pixels: assign`` (default) the stroke pixels then go to the nearest
   cell within 2 pixels, so that a cell includes its own outline.

Cells cut by the image border whose outline is not closed cannot be recovered and are
missing from the labels.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.morphology import convex_hull_image
from skimage.segmentation import expand_labels

from cellbench.datasets._common import find_dir, find_file, iter_files, relabel
from cellbench.datasets.base import (
    ConvertedWriter,
    DatasetSource,
    masks_to_labels,
    safe_image_id,
)
from cellbench.datasets.download import fetch_and_extract
from cellbench.io import CellbenchIOError, read_image, write_csv, write_json

__all__ = [
    "BBBC007",
    "BBBC009",
    "BBBC018",
    "BBBC039",
    "BBBC041",
    "enclosed_gaps",
    "outline_mask",
    "outlines_to_labels",
    "read_cellomics_dib",
]


# --------------------------------------------------------------------------------------
# Outline annotations
# --------------------------------------------------------------------------------------


def outline_mask(outline: np.ndarray) -> np.ndarray:
    """Boolean stroke mask of an outline image (any dtype, grey or colour).

    Non-zero pixels are strokes. If more than half of the image would be stroke, the
    file was read with the opposite photometric convention (e.g. a MinIsWhite bilevel
    TIFF read by PIL) and the mask is inverted.
    """
    outline = np.squeeze(np.asarray(outline))
    if outline.ndim == 3:
        channels = outline[..., :3] if outline.shape[-1] == 4 else outline
        outline = (channels != 0).any(axis=-1)
    mask = outline.astype(bool) if outline.dtype == bool else outline != 0
    if mask.mean() > 0.5:
        mask = ~mask
    return mask


#: Gap rule (a): largest share of a region's territory border that touches the background.
GAP_MAX_BACKGROUND = 0.1
#: Gap rule (b): fewest enclosed regions larger than the gap that share its wall.
GAP_MIN_NEIGHBOURS = 2
#: Gap rule (c): largest area / convex-hull area of a gap.
GAP_MAX_SOLIDITY = 0.8
#: How far (px) stroke pixels are shared out between the regions on either side.
_STROKE_REACH = 10


def enclosed_gaps(regions: np.ndarray, candidates: np.ndarray, background: np.ndarray) -> list[int]:
    """Ids of the enclosed regions that are gaps walled in by touching cells (rule 3 above).

    Parameters
    ----------
    regions : ``(H, W)`` int, the 4-connected components of the non-stroke pixels
        (0 = stroke).
    candidates : bool per region id, the enclosed regions still counted as cells.
    background : bool per region id, the regions that reach the image border.

    Returns
    -------
    list of int
        Region ids (of ``candidates``) to drop.
    """
    n = int(regions.max())
    if n == 0 or not candidates.any():
        return []
    outside = n + 1
    territory = np.where(candidates[regions], regions, 0)
    territory[background[regions] & (regions > 0)] = outside
    territory = expand_labels(territory, distance=_STROKE_REACH)
    # every 4-neighbour pair of pixels in two different territories is one contact
    a = np.concatenate([territory[:, :-1].ravel(), territory[:-1, :].ravel()])
    b = np.concatenate([territory[:, 1:].ravel(), territory[1:, :].ravel()])
    touching = (a != b) & (a > 0) & (b > 0)
    a, b = a[touching], b[touching]
    pairs, counts = np.unique(
        np.stack([np.concatenate([a, b]), np.concatenate([b, a])]), axis=1, return_counts=True
    )
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    slices = ndi.find_objects(regions)
    gaps = []
    for region in np.flatnonzero(candidates):
        mine = pairs[0] == region
        others, n_contacts = pairs[1][mine], counts[mine]
        total = int(n_contacts.sum())
        if total == 0:
            continue
        if n_contacts[others == outside].sum() > GAP_MAX_BACKGROUND * total:
            continue
        walls = others[(others != outside) & (sizes[np.minimum(others, n)] > sizes[region])]
        if walls.size < GAP_MIN_NEIGHBOURS:
            continue
        shape = regions[slices[region - 1]] == region
        if shape.sum() < GAP_MAX_SOLIDITY * convex_hull_image(shape).sum():
            gaps.append(int(region))
    return gaps


def outlines_to_labels(
    outline: np.ndarray, *, min_area: int, outline_pixels: str, drop_gaps: bool
) -> np.ndarray:
    """Instances enclosed by hand-drawn outline strokes (rule in the module docstring).

    Parameters
    ----------
    outline : the outline image; non-zero (or, if inverted, zero) pixels are strokes.
    min_area : enclosed regions with fewer pixels are stroke-crossing gaps, dropped.
    outline_pixels : ``assign`` gives stroke pixels to the nearest cell within 2 px;
        ``background`` leaves them at 0.
    drop_gaps : drop the gaps enclosed by touching cells (:func:`enclosed_gaps`).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 labels ``1..N``.
    """
    if outline_pixels not in ("assign", "background"):
        raise ValueError(f"outline_pixels must be 'assign' or 'background', got {outline_pixels!r}")
    strokes = outline_mask(outline)
    free = ~strokes
    regions = connected_components(free, connectivity=1)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    sizes = np.bincount(regions.ravel())
    background = np.zeros(sizes.size, dtype=bool)
    background[edge] = True
    background[0] = False
    drop = background.copy()
    drop[sizes < int(min_area)] = True
    drop[0] = True
    if drop_gaps:
        drop[enclosed_gaps(regions, ~drop, background)] = True
    regions[drop[regions]] = 0
    labels = relabel(regions)
    if outline_pixels == "assign" and labels.max() > 0:
        grown = expand_labels(labels, distance=2)
        labels = np.where((labels == 0) & strokes, grown, labels).astype(np.int32)
    return labels


def _fill_options(opts) -> dict:
    """The :func:`outlines_to_labels` keywords of an outline source's options."""
    return {
        "min_area": opts.min_area,
        "outline_pixels": opts.outline_pixels,
        "drop_gaps": opts.drop_gaps,
    }


# --------------------------------------------------------------------------------------
# BBBC039
# --------------------------------------------------------------------------------------


class BBBC039(DatasetSource):
    """BBBC039 v1: U2OS nuclei (Hoechst), 200 fields, instance masks as graph colouring.

    Download: ``images.zip``, ``masks.zip``, ``metadata.zip`` from
    https://data.broadinstitute.org/bbbc/BBBC039/ (CC0).

    Layout::

        images/IXMtest_<well>_s<site>_w1<UUID>.tif   16-bit grey TIFF, 520 x 696
        masks/IXMtest_<well>_s<site>_w1<UUID>.png    RGBA PNG; R = 0..3, a graph colouring
        metadata/training.txt validation.txt test.txt   the official split (mask file names)

    Conversion: instances are the connected components of each colour of the R
    channel (``skimage.measure.label(mask[..., 0])``): touching nuclei have different
    colours, a colour is reused by nuclei that do not touch. ``group`` = the well
    (one compound per well); ``official_split = test`` for the files in
    ``metadata/test.txt`` when present. No options.
    """

    kind = "bbbc039"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack images.zip, masks.zip and metadata.zip."""
        fetch_and_extract("bbbc039", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Decode each colour-coded mask into instances."""
        image_dir, mask_dir = find_dir(raw_dir, "images"), find_dir(raw_dir, "masks")
        if image_dir is None or mask_dir is None:
            raise FileNotFoundError(f"{raw_dir}: expected BBBC039 folders images/ and masks/")
        test_list = find_file(raw_dir, "test.txt")
        test_stems = set()
        if test_list is not None:
            test_stems = {Path(x.strip()).stem for x in test_list.read_text().split() if x.strip()}
        image_stems = {p.stem for p in image_dir.glob("*.tif")}
        for mask_path in sorted(mask_dir.glob("*.png")):
            if mask_path.stem not in image_stems:
                writer.skip(mask_path, f"mask with no image {mask_path.stem}.tif in {image_dir}")
        for image_path in sorted(image_dir.glob("*.tif")):
            mask_path = mask_dir / f"{image_path.stem}.png"
            if not mask_path.is_file():
                writer.skip(image_path, f"no mask {mask_path.name} in {mask_dir}")
                continue
            image = read_image(image_path)
            mask = read_image(mask_path)
            colours = mask[..., 0] if mask.ndim == 3 else mask
            labels = connected_components(colours)
            match = re.match(r"^[^_]+_([A-Z]\d+)_s\d+", image_path.stem)
            writer.add(
                safe_image_id(image_path.stem),
                image,
                relabel(labels),
                cell_type="U2OS",
                group=match.group(1) if match else image_path.stem,
                annotation="full",
                official_split="test" if image_path.stem in test_stems else "",
                source="BBBC039 v1",
                origin=image_path,
                label_origin=mask_path,
            )


# --------------------------------------------------------------------------------------
# BBBC009
# --------------------------------------------------------------------------------------


class BBBC009(DatasetSource):
    """BBBC009 v1: human red blood cells, DIC, with hand-drawn cell outlines.

    Download: ``BBBC009_v1_images.zip`` and ``BBBC009_v1_outlines.zip`` from
    https://data.broadinstitute.org/bbbc/BBBC009/.

    Layout: images (8-bit grey TIFF, 600 x 800) and outlines (1-bit bilevel TIFF,
    **MinIsWhite**: ``tifffile`` returns True on the strokes, PIL the inverse) with the
    same file names, in folders whose path contains ``images`` / ``outlines``.

    Conversion: :func:`outlines_to_labels`. Options ``min_area`` (default 30) and
    ``outline_pixels`` (``assign`` | ``background``).
    """

    kind = "bbbc009"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack the image and outline archives."""
        fetch_and_extract("bbbc009", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Pair each image with its outline file and fill the outlines."""
        opts = self.options
        images, outlines = {}, {}
        for path in iter_files(Path(raw_dir), "*.tif*"):
            rel = str(path.relative_to(raw_dir).parent).lower()
            (outlines if "outline" in rel else images)[path.stem] = path
        if not outlines:
            raise FileNotFoundError(f"{raw_dir}: no outline TIFFs (in a folder named *outlines*)")
        for stem in sorted(set(images) - set(outlines)):
            writer.skip(images[stem], "image with no outline file of the same name")
        for stem, outline_path in sorted(outlines.items()):
            if stem not in images:
                writer.skip(outline_path, "outline file with no image of the same name")
                continue
            image = read_image(images[stem])
            labels = outlines_to_labels(read_image(outline_path), **_fill_options(opts))
            writer.add(
                safe_image_id(stem),
                image,
                labels,
                cell_type="erythrocyte",
                annotation="full",
                source="BBBC009 v1 outlines",
                origin=images[stem],
                label_origin=outline_path,
            )


# --------------------------------------------------------------------------------------
# BBBC007
# --------------------------------------------------------------------------------------

_BBBC007_PAIRS = (
    (re.compile(r"d\.tif$", re.I), "f.tif"),
    (re.compile(r"_D_1UL\.tif$", re.I), "_F_2UL.tif"),
    (re.compile(r"d0\.tif$", re.I), "d1.tif"),
)


def _bbbc007_actin_name(dna_name: str) -> str | None:
    for pattern, replacement in _BBBC007_PAIRS:
        if pattern.search(dna_name):
            return pattern.sub(replacement, dna_name)
    return None


class BBBC007(DatasetSource):
    """BBBC007 v1: Drosophila Kc167 cells, DNA + actin, hand-drawn outlines.

    Download: ``BBBC007_v1_images.zip`` and ``BBBC007_v1_outlines.zip`` from
    https://data.broadinstitute.org/bbbc/BBBC007/ (CC0).

    Layout::

        BBBC007_v1_images/<sample>/<field>d.tif     DNA (grey, some RGB) ; actin: <field>f.tif
        BBBC007_v1_outlines/<sample>/<field>d.tif   nucleus outlines ; cell outlines: <field>f.tif

    Three naming conventions pair DNA and actin: ``...d.tif``/``...f.tif``,
    ``..._D_1UL.tif``/``..._F_2UL.tif`` and ``...d0.tif``/``...d1.tif``. Outlines are white
    strokes on black.

    Conversion: ``target: nuclei`` (default) pairs the DNA image with the nucleus
    outlines, ``target: cells`` the actin image with the cell outlines;
    :func:`outlines_to_labels` fills them. ``group`` = the sample folder. Options
    ``target``, ``min_area``, ``outline_pixels``.
    """

    kind = "bbbc007"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack the image and outline archives."""
        fetch_and_extract("bbbc007", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Pair DNA/actin fields with their outlines and fill the chosen target."""
        opts = self.options
        target = opts.target
        fill = _fill_options(opts)
        raw_dir = Path(raw_dir)
        images: dict[str, Path] = {}
        outlines: dict[str, Path] = {}
        for path in iter_files(raw_dir, "*.tif*"):
            rel = path.relative_to(raw_dir)
            top = next((i for i, p in enumerate(rel.parts) if "outline" in p.lower()), None)
            if top is not None:
                outlines["/".join(rel.parts[top + 1 :])] = path
                continue
            top = next((i for i, p in enumerate(rel.parts) if "image" in p.lower()), None)
            images["/".join(rel.parts[top + 1 :] if top is not None else rel.parts)] = path
        if not outlines:
            raise FileNotFoundError(f"{raw_dir}: no outline TIFFs (in BBBC007_v1_outlines/)")
        for key in sorted(set(outlines) - set(images)):
            writer.skip(outlines[key], "outline file with no image of the same name")
        for key in sorted(images):
            actin = _bbbc007_actin_name(key)
            if actin is None:
                continue
            chosen = key if target == "nuclei" else actin
            if chosen not in images or chosen not in outlines:
                missing = "image" if chosen not in images else "outline"
                writer.skip(
                    images.get(chosen) or outlines.get(chosen) or key,
                    f"no {missing} file for {chosen} ({target})",
                )
                continue
            image = read_image(images[chosen])
            labels = outlines_to_labels(read_image(outlines[chosen]), **fill)
            if labels.shape != image.shape[:2]:
                raise CellbenchIOError(
                    f"{outlines[chosen]}: outline shape {labels.shape} differs from the image "
                    f"{images[chosen]} {image.shape[:2]}. Check that the outline file belongs "
                    "to this image (same sample folder and name)."
                )
            sample = key.split("/")[0] if "/" in key else ""
            writer.add(
                safe_image_id(Path(chosen).with_suffix("").as_posix()),
                image,
                labels,
                cell_type="Kc167",
                group=sample or None,
                annotation="full",
                source=f"BBBC007 v1 {target} outlines",
                origin=images[chosen],
                label_origin=outlines[chosen],
            )


# --------------------------------------------------------------------------------------
# BBBC018
# --------------------------------------------------------------------------------------


def read_cellomics_dib(path: Path) -> np.ndarray:
    """Read a Cellomics ArrayScan ``.DIB`` image (BBBC018) as ``(H, W)`` (or ``(Z, H, W)``).

    The layout follows Bio-Formats' ``CellomicsReader``: little-endian int32 width at
    byte 4, int32 height at 8, int16 planes at 12, int16 bits per pixel at 14, int32
    compression at 16 (must be 0), pixel data from byte 52, rows in file order
    (top row first). General-purpose BMP readers (PIL) treat the file as a bottom-up
    bitmap and return it upside down, and read 16-bit data as RGB555.
    """
    data = Path(path).read_bytes()
    if len(data) < 52:
        raise ValueError(f"{path}: too short for a Cellomics DIB header")
    width, height, planes, bits, compression = struct.unpack_from("<iihhi", data, 4)
    if compression != 0:
        raise ValueError(f"{path}: compressed Cellomics DIB is not supported")
    if bits not in (8, 16) or width <= 0 or height <= 0 or planes <= 0:
        raise ValueError(
            f"{path}: unexpected DIB header (width={width}, height={height}, planes={planes}, "
            f"bits={bits})"
        )
    dtype = np.dtype("<u2") if bits == 16 else np.dtype("u1")
    count = width * height * planes
    if 52 + count * dtype.itemsize > len(data):
        raise ValueError(f"{path}: file is shorter than its header says")
    pixels = np.frombuffer(data, dtype=dtype, count=count, offset=52).astype(
        dtype.newbyteorder("=")
    )
    pixels = pixels.reshape(planes, height, width)
    return pixels[0] if planes == 1 else pixels


class BBBC018(DatasetSource):
    """BBBC018 v1: human HT29 colon-cancer cells, DNA / actin / pH3, hand-drawn outlines.

    Download: ``BBBC018_v1_images.zip`` and ``BBBC018_v1_outlines.zip`` from
    https://data.broadinstitute.org/bbbc/BBBC018/.

    Layout::

        BBBC018_v1_images/<wellidx>-DNA.DIB, -actin.DIB, -pH3.DIB   Cellomics DIB, 512 x 512
        BBBC018_v1_outlines/<wellidx>-nuclei.png, -cells.png          outline PNGs

    56 fields of view; one field (10779) has no outlines and is skipped.

    Conversion: ``target: nuclei`` (default) takes the DNA channel and the nuclei
    outlines, ``cells`` the actin channel and the cell outlines (``all_channels: true``
    stacks DNA, actin, pH3 as the image instead). DIBs are read with
    :func:`read_cellomics_dib`; ``flip_outlines: true`` flips the outline images
    vertically, should they not line up with the images. Options ``target``,
    ``all_channels``, ``flip_outlines``, ``min_area``, ``outline_pixels``.
    """

    kind = "bbbc018"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack the image and outline archives."""
        fetch_and_extract("bbbc018", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Read the DIB channels, fill the chosen outlines."""
        opts = self.options
        target = opts.target
        fill = _fill_options(opts)
        dibs = {
            p.name.lower(): p for p in iter_files(Path(raw_dir), "*") if p.suffix.lower() == ".dib"
        }
        outlines = {p.name.lower(): p for p in iter_files(Path(raw_dir), "*.png")}
        wells = sorted({n.rsplit("-", 1)[0] for n in dibs})
        if not wells:
            raise FileNotFoundError(f"{raw_dir}: no BBBC018 .DIB images (BBBC018_v1_images/)")
        channel = "dna" if target == "nuclei" else "actin"
        for name, path in sorted(outlines.items()):
            if name.rsplit("-", 1)[0] not in wells:
                writer.skip(path, "outline file with no .DIB image of the same well")
        for well in wells:
            outline = outlines.get(f"{well}-{target}.png")
            if outline is None or f"{well}-{channel}.dib" not in dibs:
                missing = f"{target} outline" if outline is None else f"{channel} image"
                writer.skip(dibs.get(f"{well}-{channel}.dib") or outline or well, f"no {missing}")
                continue
            if opts.all_channels:
                names = [f"{well}-{c}.dib" for c in ("dna", "actin", "ph3")]
                missing = [n for n in names if n not in dibs]
                if missing:
                    writer.skip(outline, f"channel image(s) {missing} missing")
                    continue
                image = np.stack([read_cellomics_dib(dibs[n]) for n in names], axis=-1)
            else:
                image = read_cellomics_dib(dibs[f"{well}-{channel}.dib"])
            drawing = read_image(outline)
            if opts.flip_outlines:
                drawing = drawing[::-1]
            labels = outlines_to_labels(drawing, **fill)
            if labels.shape != image.shape[:2]:
                raise CellbenchIOError(
                    f"{outline}: outline shape {labels.shape} differs from the image "
                    f"{dibs[f'{well}-{channel}.dib']} {image.shape[:2]}. Check that the outline "
                    "file belongs to this field (same well index)."
                )
            writer.add(
                safe_image_id(f"{well}-{target}"),
                image,
                labels,
                cell_type="HT29",
                group=well,
                annotation="full",
                source=f"BBBC018 v1 {target} outlines",
                origin=dibs[f"{well}-{channel}.dib"],
                label_origin=outline,
            )


# --------------------------------------------------------------------------------------
# BBBC041
# --------------------------------------------------------------------------------------

#: Written next to index.csv for BBBC041; the report should show it.
BOXES_NOTE = (
    "BBBC041 (P. vivax blood smears) is annotated with bounding boxes only, no masks. "
    "The images are converted with annotation=none and the boxes are in boxes.csv; "
    "mask-based metrics (AP over mask IoU, PQ, AJI, CTC SEG, pixel IoU/Dice) do not "
    "apply to this dataset."
)


class BBBC041(DatasetSource):
    """BBBC041 v1: P. vivax (malaria) infected blood smears, bounding boxes only.

    Download: ``malaria.zip`` from https://data.broadinstitute.org/bbbc/BBBC041/
    (CC BY-NC-SA 3.0).

    Layout::

        malaria/images/<uuid>.png|.jpg    RGB, 1600 x 1200 (some 1944 x 1383)
        malaria/training.json, test.json  [{"image": {"pathname": "/images/<uuid>.png",
                                              "shape": {"r", "c", "channels"}},
                                            "objects": [{"category": ...,
                                              "bounding_box": {"minimum": {"r", "c"},
                                                               "maximum": {"r", "c"}}}]}]

    Conversion: **boxes only; mask metrics do not apply.** Every image is written
    with ``annotation = none`` (no label image), its boxes go to ``boxes.csv``
    (``id, category, row_min, col_min, row_max, col_max``) and ``dataset_notes.json``
    says so. ``official_split = test`` for the images of ``test.json``. The option
    ``boxes_as_masks: true`` instead writes each box as a filled rectangle instance
    (``annotation = partial``, overlaps resolved by the common rule) for detection-style
    experiments; such labels are not cell masks.
    """

    kind = "bbbc041"

    def download(self, raw_dir: Path) -> None:
        """Fetch and unpack malaria.zip."""
        fetch_and_extract("bbbc041", raw_dir)

    def convert(self, raw_dir: Path, writer: ConvertedWriter) -> None:
        """Write images without labels plus boxes.csv (or boxes as rectangles if asked)."""
        opts = self.options
        raw_dir = Path(raw_dir)
        files = {}
        for split_name, official in (("training.json", ""), ("test.json", "test")):
            path = find_file(raw_dir, split_name)
            if path is not None:
                files[path] = official
        if not files:
            raise FileNotFoundError(f"{raw_dir}: no BBBC041 training.json / test.json")
        boxes = []
        seen = set()
        for json_path, official in files.items():
            for entry in json.loads(json_path.read_text()):
                pathname = entry["image"]["pathname"].lstrip("/")
                image_path = json_path.parent / pathname
                if not image_path.is_file():
                    writer.skip(json_path, f"entry for image {image_path} that is missing")
                    continue
                image_id = safe_image_id(Path(pathname).stem)
                if image_id in seen:
                    continue
                seen.add(image_id)
                image = read_image(image_path)
                h, w = image.shape[:2]
                rects = []
                for obj in entry.get("objects", []):
                    box = obj["bounding_box"]
                    r0, c0 = int(box["minimum"]["r"]), int(box["minimum"]["c"])
                    r1, c1 = int(box["maximum"]["r"]), int(box["maximum"]["c"])
                    boxes.append(
                        {
                            "id": image_id,
                            "category": obj.get("category", ""),
                            "row_min": r0,
                            "col_min": c0,
                            "row_max": r1,
                            "col_max": c1,
                        }
                    )
                    rects.append((max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)))
                categories = Counter(o.get("category", "") for o in entry.get("objects", []))
                labels, contested, level = None, 0, "none"
                if opts.boxes_as_masks:
                    masks = []
                    for r0, c0, r1, c1 in rects:
                        mask = np.zeros((h, w), dtype=bool)
                        mask[r0:r1, c0:c1] = True
                        masks.append(mask)
                    labels, contested = masks_to_labels(masks, (h, w))
                    level = "partial"
                infected = any(
                    c not in ("red blood cell", "leukocyte", "difficult") for c in categories
                )
                writer.add(
                    image_id,
                    image,
                    labels,
                    cell_type="infected" if infected else "uninfected",
                    annotation=level,
                    official_split=official,
                    contested_pixels=contested,
                    source="BBBC041 v1 bounding boxes",
                    origin=image_path,
                    label_origin=json_path,
                )
        columns = ["id", "category", "row_min", "col_min", "row_max", "col_max"]
        write_csv(writer.out_dir / "boxes.csv", pd.DataFrame(boxes, columns=columns))
        write_json(
            writer.out_dir / "dataset_notes.json",
            {
                "annotation": "boxes" if not opts.boxes_as_masks else "boxes_as_rectangles",
                "mask_metrics_apply": False,
                "note": BOXES_NOTE,
            },
        )
