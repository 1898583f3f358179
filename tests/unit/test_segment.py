"""``cellbench segment``: inputs, output names, no overwriting, per-image failures, progress,
plausibility warnings."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cellbench.cli import build_parser
from cellbench.config import ModelConfig
from cellbench.datasets.options import SyntheticOptions
from cellbench.inference import predict_maps
from cellbench.io import read_labels
from cellbench.models import get_family
from cellbench.segment import (
    SegmentError,
    expand_inputs,
    label_stats,
    output_names,
    plausibility_warning,
    segment_images,
)
from cellbench.synthetic import generate_image
from cellbench.train import train_model
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_networks import write_tiny_dataset

H, W = 80, 96


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A classical model folder trained (tuned) on a tiny synthetic dataset: seconds."""
    root = tmp_path_factory.mktemp("segment_model")
    write_tiny_dataset(root / "converted", root / "split.csv", height=H, width=W)
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [4]})
    out = root / "model"
    train_model(cfg, "tiny", root / "converted", root / "split.csv", out, seed=0, device="cpu")
    return out


def _cell_image(seed: int) -> np.ndarray:
    image, _ = generate_image(
        seed, "fluorescent", SyntheticOptions(height=H, width=W, n_cells=(5, 5))
    )
    return image


def _write_image(path: Path, seed: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _cell_image(seed)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, image)
    else:
        import skimage.io

        skimage.io.imsave(path, image, check_contrast=False)
    return path


def _model_with_stats(model_dir: Path, tmp_path: Path, stats) -> Path:
    copy = tmp_path / "model_copy"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    if stats is None:
        config.pop("train_label_stats", None)
    else:
        config["train_label_stats"] = stats
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def _segment(capsys, model: Path, out: Path, *args: str) -> tuple[int, str, str]:
    from cellbench.cli import main

    code = main(["segment", "--model-dir", str(model), "--out", str(out), *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- output names
def test_output_names_for_shared_stems() -> None:
    names = output_names([Path("a/img.tif"), Path("b/img.tif"), Path("a/img.png"), Path("c.tif")])
    assert names == {
        Path("a/img.tif"): "a__img.tif_masks.tif",
        Path("b/img.tif"): "b__img.tif_masks.tif",
        Path("a/img.png"): "img.png_masks.tif",
        Path("c.tif"): "c_masks.tif",
    }
    # as many parent folders as it takes
    names = output_names(["x/a/i.tif", "y/a/i.tif", "z/b/i.tif"])
    assert names[Path("x/a/i.tif")] == "x__a__i.tif_masks.tif"
    assert names[Path("y/a/i.tif")] == "y__a__i.tif_masks.tif"
    assert names[Path("z/b/i.tif")] == "b__i.tif_masks.tif"
    # a disambiguated name never takes another input's plain name
    names = output_names(["p/img.tif", "q/img.png", "img.tif.tif"])
    assert names[Path("img.tif.tif")] == "img.tif_masks.tif"
    assert names[Path("p/img.tif")] == "p__img.tif_masks.tif"
    assert names[Path("q/img.png")] == "img.png_masks.tif"
    with pytest.raises(ValueError, match="given twice"):
        output_names(["a/img.tif", "./a/img.tif"])


_parts = st.sampled_from(["a", "b", "A", "img", "x.y", "a__b", "B"])
_stems = st.sampled_from(["img", "IMG", "a", "img.tif", "a__img", "b", "c.d"])
_exts = st.sampled_from([".tif", ".TIF", ".png", ".tiff", ".jpg", ""])
_paths = st.builds(
    lambda folders, stem, ext: Path(*folders, stem + ext),
    st.lists(_parts, max_size=3),
    _stems,
    _exts,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_paths, min_size=1, max_size=8, unique_by=os.path.abspath), st.randoms())
def test_output_names_properties(paths: list[Path], rnd) -> None:
    names = output_names(paths)
    assert set(names) == set(paths)
    folded = [n.casefold() for n in names.values()]
    assert len(set(folded)) == len(paths)  # unique, also on case-insensitive file systems
    assert all(n.endswith("_masks.tif") and "/" not in n for n in names.values())
    assert output_names(paths) == names  # deterministic
    shuffled = list(paths)
    rnd.shuffle(shuffled)
    assert output_names(shuffled) == names  # independent of the input order
    stems = [p.stem.casefold() for p in paths]
    for p in paths:
        if stems.count(p.stem.casefold()) == 1:
            assert names[p] == f"{p.stem}_masks.tif"


# ----------------------------------------------------------------------------- inputs
def test_expand_inputs_folders_globs_and_errors(tmp_path: Path) -> None:
    d = tmp_path / "data"
    for name in ["b.tif", "a.PNG", "c.JPEG", "d.tiff", "notes.txt", ".hidden.tif", "sub/e.tif"]:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"x")
    flat = [d / "a.PNG", d / "b.tif", d / "c.JPEG", d / "d.tiff"]
    assert expand_inputs([d]) == flat
    assert expand_inputs([str(d)], recursive=True) == [*flat, d / "sub/e.tif"]
    # a pattern the shell did not expand; a file named twice counts once
    assert expand_inputs([str(d / "*.tif"), str(d / "b.tif")]) == [d / "b.tif"]
    assert expand_inputs([str(d / "**" / "*.tif")]) == [d / "b.tif", d / "sub/e.tif"]
    # an explicit file is taken whatever its extension (it fails later, on its own)
    assert expand_inputs([d / "notes.txt"]) == [d / "notes.txt"]
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "empty" / "deeper" / "f.tif").write_bytes(b"x")
    with pytest.raises(SegmentError) as info:
        expand_inputs([d, tmp_path / "missing.tif", str(d / "*.jpg"), tmp_path / "empty"])
    message = str(info.value)
    assert "3 of the image arguments match no image" in message
    assert f"{tmp_path / 'missing.tif'}: no such file or folder" in message
    assert f"{d / '*.jpg'}: no file matches this pattern" in message
    assert f"{tmp_path / 'empty'}: a folder without image files" in message
    assert "--recursive" in message
    assert expand_inputs([tmp_path / "empty"], recursive=True) == [
        tmp_path / "empty" / "deeper" / "f.tif"
    ]


def test_segment_takes_a_folder_and_a_glob(model_dir: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _write_image(data / "one.tif", 1)
    _write_image(data / "two.png", 2)
    _write_image(data / "sub" / "three.tif", 3)
    code, out, err = _segment(capsys, model_dir, tmp_path / "o1", data)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == [
        "one_masks.tif",
        "two_masks.tif",
    ]
    assert out.split() == [str(tmp_path / "o1" / n) for n in ("one_masks.tif", "two_masks.tif")]
    code, _, err = _segment(capsys, model_dir, tmp_path / "o2", "--recursive", data)
    assert code == 0, err
    assert len(list((tmp_path / "o2").iterdir())) == 3
    code, _, err = _segment(capsys, model_dir, tmp_path / "o3", str(data / "*.tif"))
    assert code == 0, err
    assert [p.name for p in (tmp_path / "o3").iterdir()] == ["one_masks.tif"]
    code, _, err = _segment(capsys, model_dir, tmp_path / "o4", data / "nope.tif", data)
    assert code == 2
    assert f"{data / 'nope.tif'}: no such file or folder" in err
    assert "Re-run the stage" not in err
    assert not (tmp_path / "o4").exists()


def test_segment_params_option_is_gone(capsys) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--params", "p.yaml", "--model-dir", "m", "--out", "o", "i"])
    assert "unrecognized arguments: --params" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--help"])
    help_text = capsys.readouterr().out
    assert "--params" not in help_text
    assert "{stem}_masks.tif" in help_text and "a__img.tif_masks.tif" in help_text
    assert "--overwrite" in help_text and "--recursive" in help_text
    # the other subcommands keep it
    assert parser.parse_args(["validate", "--params", "p.yaml"]).params == "p.yaml"


# ----------------------------------------------------------------------------- no overwriting
def test_same_stems_give_distinct_outputs(model_dir: Path, tmp_path: Path, capsys) -> None:
    inputs = [
        _write_image(tmp_path / "a" / "img.tif", 1),
        _write_image(tmp_path / "b" / "img.tif", 2),
        _write_image(tmp_path / "a" / "img.png", 3),
    ]
    code, _, err = _segment(capsys, model_dir, tmp_path / "out", *inputs)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a__img.tif_masks.tif",
        "b__img.tif_masks.tif",
        "img.png_masks.tif",
    ]
    first = read_labels(tmp_path / "out" / "a__img.tif_masks.tif")
    second = read_labels(tmp_path / "out" / "b__img.tif_masks.tif")
    assert not np.array_equal(first, second)  # each from its own image


def test_refuses_to_overwrite_existing_outputs(model_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cells"
    _write_image(folder / "cell.tif", 1)
    _write_image(folder / "other.tif", 2)
    truth = folder / "cell_masks.tif"
    tifffile.imwrite(truth, np.arange(H * W, dtype=np.uint16).reshape(H, W))
    before = truth.read_bytes()
    code, out, err = _segment(capsys, model_dir, folder, folder / "cell.tif", folder / "other.tif")
    assert code == 2
    assert "1 output file(s) already exist" in err and str(truth) in err
    assert "--overwrite" in err and "Nothing was written" in err
    assert truth.read_bytes() == before
    assert not (folder / "other_masks.tif").exists()  # refused before any work
    assert "delete" not in err.lower()
    code, _, err = _segment(
        capsys, model_dir, folder, "--overwrite", folder / "cell.tif", folder / "other.tif"
    )
    assert code == 0, err
    assert truth.read_bytes() != before
    assert read_labels(truth).shape == (H, W)


def test_never_writes_onto_an_input(model_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cells"
    _write_image(folder / "cell.tif", 1)
    truth = folder / "cell_masks.tif"  # ground truth, and an image file of the folder
    tifffile.imwrite(truth, np.ones((H, W), np.uint16))
    before = truth.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, _, err = _segment(capsys, model_dir, folder, *extra, folder)
        assert code == 2
        assert "would replace input images" in err and str(truth) in err
        assert truth.read_bytes() == before
        assert not (folder / "cell_masks_masks.tif").exists()
    with pytest.raises(SegmentError, match="would replace input images"):
        segment_images(model_dir, [truth, folder / "cell.tif"], folder, overwrite=True)
    # a link to an input counts as the input
    out = tmp_path / "out"
    out.mkdir()
    os.link(folder / "cell.tif", out / "cell_masks.tif")
    with pytest.raises(SegmentError, match="would replace input images"):
        segment_images(model_dir, [folder / "cell.tif", out / "cell_masks.tif"], out)


# ----------------------------------------------------------------------------- failures
def test_unreadable_files_are_skipped_and_summarised(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    good = [_write_image(tmp_path / f"g{i}.tif", i) for i in range(3)]
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    inputs = [good[0], notes, good[1], broken, good[2]]
    code, out, err = _segment(capsys, model_dir, tmp_path / "out", *inputs)
    assert code != 0
    assert "2 of 5 images failed" in err
    assert f"{notes}: cannot be read as an image" in err
    assert f"{broken}: cannot be read as an image" in err
    assert "[2/5]" in err and "skipped" in err
    assert "3 masks written" in err
    assert "delete" not in err.lower()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "g0_masks.tif",
        "g1_masks.tif",
        "g2_masks.tif",
    ]
    assert len(out.split()) == 3


def test_z_stack_is_an_error_for_that_file(model_dir: Path, tmp_path: Path, capsys) -> None:
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([_cell_image(s) for s in range(5)]))  # (5, H, W)
    good = _write_image(tmp_path / "good.tif", 7)
    code, _, err = _segment(capsys, model_dir, tmp_path / "out", stack, good)
    assert code == 2
    assert "1 of 2 images failed" in err and f"{stack}:" in err
    assert not (tmp_path / "out" / "stack_masks.tif").exists()
    assert read_labels(tmp_path / "out" / "good_masks.tif").shape == (H, W)


def test_channel_first_image_is_segmented_as_channels_last(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    from cellbench.modelfolder import load_model
    from cellbench.segment import segment_array

    planes = np.stack([_cell_image(1), _cell_image(2)])  # (2, H, W): two channels, first
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, planes)
    code, out, err = _segment(capsys, model_dir, tmp_path / "out", two)
    assert code == 0, err
    mask = read_labels(tmp_path / "out" / "two_masks.tif")
    # exactly the mask of the same pixels given channels-last (H, W, 2)
    expected = segment_array(load_model(model_dir, "cpu"), np.moveaxis(planes, 0, -1)).labels
    assert mask.shape == (H, W) and np.array_equal(mask, expected)
    assert mask.max() > 0


def test_disk_full_stops_the_run_keeps_finished_masks_and_leaves_no_partial_file(
    model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import errno

    from cellbench import io as cio

    images = [_write_image(tmp_path / f"g{i}.tif", i) for i in range(4)]
    real_imwrite, calls = cio.tifffile.imwrite, []

    def imwrite(path, *args, **kwargs):
        calls.append(path)
        if len(calls) < 3:
            return real_imwrite(path, *args, **kwargs)
        Path(path).write_bytes(b"II*\x00 half a mask")  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cio.tifffile, "imwrite", imwrite)
    out = tmp_path / "out"
    code, stdout, err = _segment(capsys, model_dir, out, *images)
    assert code == 2
    error = err.split("cellbench segment: error: ", 1)[1]
    assert error.startswith(f"{out / 'g2_masks.tif'}: cannot be written: the disk is full")
    assert "No space left on device" in error and "free there" in error
    assert "no partial file was left" in error
    assert f"2 masks written before are complete and kept in {out}" in error
    assert f"2 images not segmented: {images[2]}, {images[3]}" in error
    assert "--out folder on another disk" in error and "--overwrite" in error
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["g0_masks.tif", "g1_masks.tif"]
    for name in ("g0_masks.tif", "g1_masks.tif"):
        assert read_labels(out / name).shape == (H, W)
    assert len(calls) == 3  # stopped at the first failed write: g3 was not even tried


def test_output_folder_problems_are_named_before_any_work(
    model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    image = _write_image(tmp_path / "img.tif")
    # a folder where a mask would go: never replaced, not even with --overwrite
    (tmp_path / "o1" / "img_masks.tif").mkdir(parents=True)
    code, _, err = _segment(capsys, model_dir, tmp_path / "o1", "--overwrite", image)
    assert code == 2 and "taken by folders, which segment never replaces" in err
    assert f"{tmp_path / 'o1' / 'img_masks.tif'}" in err and "Traceback" not in err
    # --out below a file
    (tmp_path / "file").write_text("x")
    code, _, err = _segment(capsys, model_dir, tmp_path / "file" / "sub", image)
    assert code == 2 and "Traceback" not in err
    assert f"--out {tmp_path / 'file' / 'sub'}: cannot create a file in this folder (Not a" in err
    # a folder nothing can be written to (a read-only disk, no permission): refused before
    # the model is loaded, and no empty folder is left behind
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr("cellbench.segment.load_model", lambda *a: pytest.fail("loaded"))
    code, _, err = _segment(capsys, model_dir, tmp_path / "ro" / "masks", image)
    assert code == 2 and "cannot create a file in this folder (Permission denied)" in err
    assert not (tmp_path / "ro").exists()
    monkeypatch.undo()
    # a run that writes nothing leaves no empty --out folder either
    bad = tmp_path / "bad.tif"
    bad.write_text("not an image")
    code, _, err = _segment(capsys, model_dir, tmp_path / "o2" / "masks", bad)
    assert code == 2 and "1 of 1 images failed" in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            OSError(28, "No space left on device"),
            "error: the disk is full, or the disk quota used up (No space left on device); free",
        ),
        (
            IsADirectoryError(21, "Is a directory", "/x/.a.tmp", None, "/x/a_masks.tif"),
            "error: /x/.a.tmp -> /x/a_masks.tif: Is a directory (IsADirectoryError)",
        ),
    ],
)
def test_any_stage_reports_an_os_error_in_one_line(
    tmp_path: Path, capsys, monkeypatch, error, words
) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("cellbench.segment.segment_images", fail)
    code, _, err = _segment(capsys, tmp_path, tmp_path / "out", _write_image(tmp_path / "i.tif"))
    assert code == 2 and err.startswith(f"cellbench segment: {words}")
    assert "Traceback" not in err


def test_non_files_and_huge_float_values_are_skipped_with_the_reason(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    huge = tmp_path / "huge.tif"
    tifffile.imwrite(huge, np.full((H, W), 1e300))  # float64 beyond float32: was NaN inside
    good = _write_image(tmp_path / "good.tif")
    code, _, err = _segment(capsys, model_dir, tmp_path / "out", huge, "/dev/null", good)
    assert code == 2 and "2 of 3 images failed" in err
    assert f"{huge}: image has pixel values up to 1e+300 in magnitude" in err
    assert "/dev/null: not a file (a folder, device or pipe)" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_masks.tif"]


def test_mask_shape_is_checked(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from cellbench.models.classical import Classical

    monkeypatch.setattr(Classical, "postprocess", lambda self, maps, t: np.zeros((2, H), int))
    image = _write_image(tmp_path / "i.tif")
    report = segment_images(model_dir, [image], tmp_path / "out", stream=io.StringIO())
    assert not report.ok and report.written == []
    assert "the mask has shape (2, 80) but the image is 80 x 96" in report.failed[0][1]
    assert not (tmp_path / "out" / "i_masks.tif").exists()


# ----------------------------------------------------------------------------- progress
def test_progress_lines_per_image(model_dir: Path, tmp_path: Path, capsys) -> None:
    inputs = [_write_image(tmp_path / "p.tif", 1), _write_image(tmp_path / "q.png", 2)]
    code, _, err = _segment(capsys, model_dir, tmp_path / "out", *inputs)
    assert code == 0
    assert f"[1/2] {inputs[0]}: 96 x 80 px" in err
    assert f"[2/2] {inputs[1]}: 96 x 80 px" in err
    assert re.search(rf"\[2/2\] {re.escape(str(inputs[1]))}: \d+ objects in \d+\.\d s", err)
    assert "2 of 2 images segmented" in err
    assert "\r" not in err  # no progress bar without a terminal


def test_predict_maps_reports_tiles() -> None:
    import torch

    torch.manual_seed(0)
    options = {
        "encoder": "resnet18",
        "encoder_depth": 3,
        "decoder_channels": [16, 16, 16],
    }
    family = get_family(ModelConfig("u", "unet", options))
    net = family.build_network().eval()
    image = np.random.default_rng(0).random((1, 150, 170)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    tiled = predict_maps(
        family, net, image, "cpu", 96, 32, progress=lambda *a: calls.append(a), tta=False
    )
    total = calls[-1][1]
    assert total > 1 and calls == [(i, total) for i in range(1, total + 1)]
    calls.clear()
    whole = predict_maps(
        family, net, image, "cpu", 1024, progress=lambda *a: calls.append(a), tta=False
    )
    assert calls == [(1, 1)] and whole.shape == tiled.shape


def test_tile_progress_without_and_with_a_terminal(tmp_path: Path, monkeypatch) -> None:
    import cellbench.segment as segment
    import torch
    from cellbench.modelfolder import write_model_folder

    torch.manual_seed(0)
    options = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 16, 16]}
    family = get_family(ModelConfig("u", "unet", options))
    write_model_folder(
        tmp_path / "unet",
        config={"model": "u", "family": "unet", "options": family.options.resolved()},
        tuned={"selected": family.threshold_grid()[0].resolved()},
        history=[],
        net=family.build_network(),
    )
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((150, 170)).astype(np.float32))
    monkeypatch.setattr(segment, "TILE_REPORT_SECONDS", 0.0)
    log = io.StringIO()
    report = segment_images(
        tmp_path / "unet", [image], tmp_path / "o1", device="cpu", tile_size=96, stream=log
    )
    assert report.ok
    assert f"[1/1] {image} tile 1/" in log.getvalue()
    assert "tile 2/" in log.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    segment_images(
        tmp_path / "unet", [image], tmp_path / "o2", device="cpu", tile_size=96, stream=term
    )
    assert "tiles" in term.getvalue() and "\r" in term.getvalue()  # a tqdm bar
    assert "tile 1/" not in term.getvalue()


# ----------------------------------------------------------------------------- plausibility
def test_label_stats() -> None:
    labels = np.zeros((1000, 1000), np.int32)
    labels[:10, :10] = 1
    labels[20:30, :20] = 2
    labels[50:60, :30] = 5
    n, density, median = label_stats(labels)
    assert (n, density, median) == (3, 3.0, 200.0)
    assert label_stats(np.zeros((4, 4), int))[0] == 0


def test_plausibility_warning_thresholds() -> None:
    labels = np.zeros((100, 100), np.int32)  # 0.01 megapixel
    labels[:10, :10] = 1  # one object of 100 px: 100 objects per megapixel
    assert plausibility_warning("x.tif", labels, None) is None
    assert plausibility_warning("x.tif", labels, (10.0, 100.0)) is None  # exactly 10x
    assert plausibility_warning("x.tif", labels, (20.0, 500.0)) is None
    dense = plausibility_warning("x.tif", labels, (9.0, 100.0))
    assert dense is not None
    assert "x.tif" in dense and "100 objects per megapixel" in dense
    assert "(training data: 9)" in dense and "100 px (training data: 100 px)" in dense
    assert "noise" in dense and "scale" in dense and "unlike the training data" in dense
    assert plausibility_warning("x.tif", labels, (100.0, 1001.0)) is not None  # < 0.1x area
    assert plausibility_warning("x.tif", np.zeros((9, 9), int), (1.0, 1.0)) is None


def test_segment_warns_about_implausible_results(model_dir: Path, tmp_path: Path, capsys) -> None:
    inputs = [_write_image(tmp_path / "p.tif", 1), _write_image(tmp_path / "q.tif", 2)]
    labels = np.concatenate([np.ravel(generate_image(s, "fluorescent")[1]) for s in (0, 1)])
    # realistic statistics: no warning
    areas = np.bincount(labels)[1:]
    real = {
        "objects_per_megapixel": float((areas > 0).sum() / labels.size * 1e6),
        "median_area": float(np.median(areas[areas > 0])),
    }
    code, _, err = _segment(
        capsys, _model_with_stats(model_dir, tmp_path / "r", real), tmp_path / "o1", *inputs
    )
    assert code == 0 and "warning" not in err
    # training data with 100x fewer objects: both images are flagged, counted in the summary
    sparse = {**real, "objects_per_megapixel": real["objects_per_megapixel"] / 100}
    code, _, err = _segment(
        capsys, _model_with_stats(model_dir, tmp_path / "s", sparse), tmp_path / "o2", *inputs
    )
    assert code == 0
    assert err.count("warning: ") == 2
    assert f"warning: {inputs[0]}: " in err and "objects per megapixel" in err
    assert "2 plausibility warnings" in err
    # an older model folder without statistics: a note, no check
    code, _, err = _segment(
        capsys, _model_with_stats(model_dir, tmp_path / "o", None), tmp_path / "o3", *inputs
    )
    assert code == 0 and "warning" not in err
    assert "has no train_label_stats" in err
    # statistics present but null (no fully annotated training image): skipped too
    nulls = {"objects_per_megapixel": None, "median_area": None}
    code, _, err = _segment(
        capsys, _model_with_stats(model_dir, tmp_path / "n", nulls), tmp_path / "o4", *inputs
    )
    assert code == 0 and "warning" not in err


def test_tile_size_below_twice_the_overlap_is_refused(tmp_path: Path, capsys) -> None:
    """Tiles overlap by 64 px: a smaller tile would never advance, so the CLI refuses it."""
    from cellbench.cli import main

    with pytest.raises(SystemExit) as stop:
        main(
            ["segment", "--model-dir", str(tmp_path), "--out", str(tmp_path / "o")]
            + ["--tile-size", "64", str(tmp_path / "a.tif")]
        )
    assert stop.value.code == 2
    assert "64 is too small" in capsys.readouterr().err
