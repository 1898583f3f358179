from pathlib import Path

import numpy as np
import pytest
from cellbench.io import (
    CellbenchIOError,
    atomic_dir,
    atomic_path,
    read_image,
    read_json,
    read_labels,
    write_json,
    write_labels,
)


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
