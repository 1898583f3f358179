"""Atomic writing (permissions, temporaries), and the checks on loaded images and labels."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from cellbench import io as cio
from cellbench.io import (
    CellbenchIOError,
    DiskFullError,
    atomic_dir,
    atomic_path,
    check_image,
    check_labels,
    read_image,
    read_json,
    read_labels,
    write_csv,
    write_image,
    write_json,
    write_labels,
)
from PIL import Image


def test_labels_round_trip_dtype(tmp_path: Path) -> None:
    small = np.arange(12, dtype=np.int64).reshape(3, 4)
    write_labels(tmp_path / "a.tif", small)
    assert read_image(tmp_path / "a.tif").dtype == np.uint16
    np.testing.assert_array_equal(read_labels(tmp_path / "a.tif"), small)
    big = small.copy()
    big[0, 0] = 70000
    write_labels(tmp_path / "b.tif", big)
    assert read_image(tmp_path / "b.tif").dtype == np.uint32
    np.testing.assert_array_equal(read_labels(tmp_path / "b.tif"), big)


def test_write_labels_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_labels(tmp_path / "x.tif", np.zeros((2, 2, 2), int))
    with pytest.raises(ValueError, match="integers"):
        write_labels(tmp_path / "x.tif", np.zeros((2, 2), float))
    with pytest.raises(ValueError, match="negative"):
        write_labels(tmp_path / "x.tif", -np.ones((2, 2), int))


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_dir_replaces_whole_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "scores"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CellbenchIOError, match="missing.tif: no such file"):
        read_image(tmp_path / "missing.tif")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(CellbenchIOError, match="broken.tif: cannot be read"):
        read_image(broken)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CellbenchIOError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


# --------------------------------------------------------------------------------------
# permissions: outputs follow the umask, not tempfile's private 0600 / 0700
# --------------------------------------------------------------------------------------


@pytest.fixture
def set_umask() -> Iterator:
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o027])
def test_outputs_get_the_umask_permissions(tmp_path: Path, set_umask, umask: int) -> None:
    set_umask(umask)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    written = [
        write_json(tmp_path / "a.json", {"v": 1}),
        write_labels(tmp_path / "l.tif", np.arange(6).reshape(2, 3)),
        write_csv(tmp_path / "t.csv", pd.DataFrame({"x": [1, 2]})),
    ]
    write_json(tmp_path / "a.json", {"v": 2})  # overwriting keeps the rule
    for path in written:
        assert _mode(path) == file_mode, path.name
    for _ in range(2):  # a new folder, then one replacing an existing folder
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "plain.txt").write_text("x")
            write_json(tmp / "nested.json", {"v": 1})
            (tmp / "sub").mkdir()
        out = tmp_path / "out"
        assert _mode(out) == dir_mode
        assert _mode(out / "sub") == dir_mode
        assert _mode(out / "plain.txt") == file_mode
        assert _mode(out / "nested.json") == file_mode


def test_umask_is_read_without_proc_too(tmp_path: Path, set_umask, monkeypatch) -> None:
    set_umask(0o027)
    if Path(cio._PROC_STATUS).is_file():
        assert cio._umask() == 0o027
    monkeypatch.setattr(cio, "_PROC_STATUS", str(tmp_path / "no-proc"))
    assert cio._umask() == 0o027
    assert os.umask(0o027) == 0o027  # the fallback put the umask back
    write_json(tmp_path / "a.json", {})
    assert _mode(tmp_path / "a.json") == 0o640


# --------------------------------------------------------------------------------------
# check_image / read_image
# --------------------------------------------------------------------------------------


def _fill_disk_on_write(monkeypatch, code: int = errno.ENOSPC) -> None:
    """tifffile and json writes put a few bytes in the file, then find the disk full."""

    def full(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00partial")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tifffile, "imwrite", full)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full(self))


def test_disk_full_names_the_file_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    write_labels(tmp_path / "done.tif", np.ones((4, 4), int))
    write_json(tmp_path / "old.json", {"v": 1})
    _fill_disk_on_write(monkeypatch)
    with pytest.raises(DiskFullError) as err:
        write_labels(tmp_path / "new.tif", np.ones((4, 4), int))
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'new.tif'}: cannot be written: the disk is full")
    assert f"folder {tmp_path}, " in text and "free there" in text
    assert "Nothing partial was left behind" in text and "another disk" in text
    assert isinstance(err.value.original, OSError) and err.value.original.errno == errno.ENOSPC
    with pytest.raises(DiskFullError, match=r"old\.json: cannot be written: the disk is full"):
        write_json(tmp_path / "old.json", {"v": 2})
    monkeypatch.undo()
    assert read_json(tmp_path / "old.json") == {"v": 1}  # the old result is whole
    assert read_labels(tmp_path / "done.tif").sum() == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.tif", "old.json"]  # no temporaries


def test_disk_quota_and_full_disk_in_a_result_folder(tmp_path: Path, monkeypatch) -> None:
    _fill_disk_on_write(monkeypatch, errno.EDQUOT)
    with pytest.raises(DiskFullError, match=r"a\.json: cannot be written: the disk quota is used"):
        write_json(tmp_path / "a.json", {})
    _fill_disk_on_write(monkeypatch)
    out = tmp_path / "scores"
    with pytest.raises(DiskFullError) as err, atomic_dir(out) as tmp:
        write_json(tmp / "summary.json", {})
    # named after the folder being produced, not the temporary one the file was in
    assert str(err.value).startswith(f"{out}: cannot be written: the disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # a write that fails otherwise while the disk is (nearly) full counts too: torch.save
    # reports a full disk as a RuntimeError
    monkeypatch.undo()
    usage = cio.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cio.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    torch_message = "[enforce fail at inline_container.cc:672] unexpected pos"
    full = r"w\.pt: .*4\.0 KiB free there; RuntimeError"
    with pytest.raises(DiskFullError, match=full), atomic_path(tmp_path / "w.pt"):
        raise RuntimeError(torch_message)
    with pytest.raises(ValueError, match="not about the disk"), atomic_path(tmp_path / "v.pt"):
        raise ValueError("not about the disk")
    assert list(tmp_path.iterdir()) == []


def test_float_values_beyond_float32_are_refused(tmp_path: Path) -> None:
    image = np.ones((4, 5), np.float64)
    image[1, 1] = -1e300
    with pytest.raises(CellbenchIOError) as err:
        check_image(image, tmp_path / "big.tif")
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'big.tif'}: image has pixel values up to 1e+300")
    assert "between -1e38 and 1e38" in text and "Rescale" in text
    edge = np.full((2, 2), 1e38)
    assert check_image(edge, "x.tif") is edge
    assert np.isfinite(cio.np.asarray(edge, np.float32)).all()


def test_non_finite_image_names_file_count_and_fix(tmp_path: Path) -> None:
    image = np.ones((4, 5), np.float32)
    image[0, 0], image[1, 2], image[3, 4] = np.nan, np.inf, -np.inf
    write_image(tmp_path / "img.tif", image)
    with pytest.raises(CellbenchIOError) as err:
        read_image(tmp_path / "img.tif")
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'img.tif'}: image has non-finite values")
    assert "(NaN or infinity) in 3 of 20 pixels." in text
    assert "numpy.nan_to_num" in text
    rgb = np.zeros((4, 5, 3), np.float64)
    rgb[0, 0, :] = np.nan  # one pixel, three values
    rgb[2, 2, 1] = np.inf
    with pytest.raises(
        CellbenchIOError,
        match=r"rgb\.tif: image has non-finite values \(NaN or infinity\) in 2 of 20 pixels",
    ):
        check_image(rgb, tmp_path / "rgb.tif")
    good = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    assert check_image(good, "x.tif") is good


def test_check_image_dtype_and_shape(tmp_path: Path) -> None:
    with pytest.raises(CellbenchIOError, match=r"s\.tif: image pixels have data type <U1"):
        check_image(np.array([["a", "b"]]), tmp_path / "s.tif")
    with pytest.raises(CellbenchIOError, match=r"c\.tif: image pixels have data type complex64"):
        check_image(np.zeros((3, 3), np.complex64), tmp_path / "c.tif")
    with pytest.raises(CellbenchIOError, match=r"v\.tif: image has shape \(7,\)"):
        check_image(np.zeros(7), tmp_path / "v.tif")
    with pytest.raises(CellbenchIOError, match=r"5 channels \(shape \(8, 8, 5\)\)"):
        check_image(np.zeros((8, 8, 5), np.uint8), tmp_path / "m.tif")
    with pytest.raises(CellbenchIOError, match=r"e\.tif: image is empty"):
        check_image(np.zeros((0, 4), np.uint8), tmp_path / "e.tif")
    mask = np.eye(4, dtype=bool)
    write_image(tmp_path / "b.tif", mask)
    got = read_image(tmp_path / "b.tif")
    assert got.dtype == bool and np.array_equal(got, mask)


def test_channel_first_tiffs_become_channels_last(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 255, (3, 40, 48), dtype=np.uint8)
    hwc = np.moveaxis(chw, 0, -1)
    cases = {
        "unlabelled.tif": {"photometric": "minisblack"},  # tifffile axes QYX, 3 pages
        "planar_rgb.tif": {"photometric": "rgb", "planarconfig": "separate"},  # SYX
        "imagej.tif": {"imagej": True, "metadata": {"axes": "CYX"}},
        "ome.ome.tif": {"ome": True, "metadata": {"axes": "CYX"}},
    }
    for name, kwargs in cases.items():
        tifffile.imwrite(tmp_path / name, chw, **kwargs)
        got = read_image(tmp_path / name)
        assert got.shape == (40, 48, 3), name
        assert np.array_equal(got, hwc), name
    two = rng.integers(0, 255, (2, 40, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "pages.tif", two, metadata=None)  # plain 2-page TIFF, axes IYX
    assert np.array_equal(read_image(tmp_path / "pages.tif"), np.moveaxis(two, 0, -1))


def test_channels_last_and_single_planes_stay(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for channels in (2, 3, 4):  # write_image stores (H, W, 2..4) its own way: same array back
        hwc = rng.integers(0, 255, (40, 48, channels), dtype=np.uint8)
        write_image(tmp_path / f"c{channels}.tif", hwc)
        assert np.array_equal(read_image(tmp_path / f"c{channels}.tif"), hwc)
    plane = rng.integers(0, 255, (40, 48), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "one.tif", plane[None])  # (1, H, W): the singleton is dropped
    assert np.array_equal(read_image(tmp_path / "one.tif"), plane)
    rgba = rng.integers(0, 255, (40, 48, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba)
    grey_alpha = rgba[..., :2]
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), grey_alpha)


@pytest.mark.parametrize(
    ("shape", "kwargs", "planes"),
    [
        ((10, 40, 48), {}, 10),  # unlabelled leading axis >= 5
        ((3, 40, 48), {"imagej": True, "metadata": {"axes": "ZYX"}}, 3),  # labelled Z
        ((4, 40, 48), {"ome": True, "metadata": {"axes": "TYX"}}, 4),  # labelled T
        ((2, 3, 2, 40, 48), {"imagej": True, "metadata": {"axes": "TZCYX"}}, 12),
    ],
)
def test_stacks_are_refused(tmp_path: Path, shape, kwargs, planes: int) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint16), **kwargs)
    with pytest.raises(CellbenchIOError) as err:
        read_image(path)
    text = str(err.value)
    assert text.startswith(f"{path}: this is a multi-page TIFF of {planes} planes")
    assert "cellbench segments 2-D images" in text and "maximum projection" in text
    with pytest.raises(CellbenchIOError) as err:
        read_labels(path)
    assert str(err.value).startswith(f"{path}: this label file is a multi-page TIFF of {planes}")
    assert "cellbench segments 2-D images" not in str(err.value)


def test_pages_written_one_by_one_are_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:  # three separate series of one plane each
        for _ in range(3):
            tif.write(np.zeros((40, 48), np.uint8))
    with pytest.raises(CellbenchIOError, match=r"multi-page TIFF of 3 planes \(3 series"):
        read_image(path)


# --------------------------------------------------------------------------------------
# check_labels / read_labels
# --------------------------------------------------------------------------------------


def test_label_files_are_blamed_as_label_files(tmp_path: Path) -> None:
    chw = np.zeros((3, 40, 48), np.uint16)
    tifffile.imwrite(tmp_path / "mask.tif", chw, photometric="minisblack")  # 3 pages
    assert read_image(tmp_path / "mask.tif").shape == (40, 48, 3)  # fine as a 3-channel image
    with pytest.raises(
        CellbenchIOError, match=r"mask\.tif: this label file is a multi-page TIFF of 3 planes"
    ):
        read_labels(tmp_path / "mask.tif")  # ... but not as labels
    tifffile.imwrite(tmp_path / "planar.tif", chw, photometric="rgb", planarconfig="separate")
    with pytest.raises(CellbenchIOError, match=r"planar\.tif: a label image must be a 2-D array"):
        read_labels(tmp_path / "planar.tif")  # one page of RGB: a colour image, not a stack
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(CellbenchIOError, match=r"rgb\.png: a label image must be a 2-D array"):
        read_labels(tmp_path / "rgb.png")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(CellbenchIOError, match=r"broken\.tif: cannot be read as a label image"):
        read_labels(tmp_path / "broken.tif")
    with pytest.raises(CellbenchIOError, match=r"broken\.tif: cannot be read as an image"):
        read_image(tmp_path / "broken.tif")


def test_float_and_bool_labels(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [2, 3, 0]])
    tifffile.imwrite(tmp_path / "f.tif", ids.astype(np.float32))
    got = read_labels(tmp_path / "f.tif")
    assert got.dtype == np.int32 and np.array_equal(got, ids)
    tifffile.imwrite(tmp_path / "b.tif", ids > 1)
    got = read_labels(tmp_path / "b.tif")
    assert got.dtype == np.int32 and np.array_equal(got, (ids > 1).astype(int))
    tifffile.imwrite(tmp_path / "p.tif", ids * 0.5)
    with pytest.raises(CellbenchIOError) as err:
        read_labels(tmp_path / "p.tif")
    assert str(err.value).startswith(f"{tmp_path / 'p.tif'}: label image has non-integer values")
    assert "(2 pixels, e.g. 0.5)" in str(err.value)
    with pytest.raises(CellbenchIOError, match=r"\(1 pixel, e\.g\. 2\.5\)"):
        check_labels(np.array([[1.0, 2.5]]), "one.tif")
    nan = ids.astype(float)
    nan[0, 0] = np.nan
    with pytest.raises(
        CellbenchIOError,
        match=r"n\.tif: label image has non-finite values \(NaN or infinity\) in 1 pixel;",
    ):
        check_labels(nan, tmp_path / "n.tif")


def test_negative_huge_and_wide_labels(tmp_path: Path) -> None:
    ids = np.array([[0, -1, 2], [-3, 3, 0]], np.int16)
    tifffile.imwrite(tmp_path / "neg.tif", ids)
    with pytest.raises(
        CellbenchIOError, match=r"neg\.tif: label image has 2 pixels with negative values"
    ):
        read_labels(tmp_path / "neg.tif")
    with pytest.raises(CellbenchIOError, match="negative values"):
        check_labels(-np.ones((2, 2)), "neg_float.tif")
    with pytest.raises(CellbenchIOError, match="label image has data type <U1"):
        check_labels(np.array([["a", "b"]]), "s.tif")
    wide = np.array([[0, 2**31]], np.uint32)
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    got = read_labels(tmp_path / "wide.tif")
    assert got.dtype == np.int64 and got[0, 1] == 2**31
    with pytest.raises(CellbenchIOError, match="do not fit in 64-bit integers"):
        check_labels(np.array([[0, 2**63]], np.uint64), "huge.tif")
