import numpy as np
import pytest
from cellbench.datasets.options import SyntheticOptions
from cellbench.synthetic import generate_image
from scipy import ndimage as ndi


@pytest.mark.parametrize("look", ["fluorescent", "phase"])
def test_deterministic_and_valid_labels(look: str) -> None:
    spec = SyntheticOptions(height=128, width=160)
    img1, lab1 = generate_image(7, look, spec)
    img2, lab2 = generate_image(7, look, spec)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(lab1, lab2)
    assert img1.shape == lab1.shape == (128, 160)
    assert img1.dtype == (np.uint16 if look == "fluorescent" else np.uint8)
    ids = np.unique(lab1[lab1 > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive
    for i in ids:  # every instance one connected component
        assert ndi.label(lab1 == i)[1] == 1
    assert not np.array_equal(lab1, generate_image(8, look, spec)[1])


def test_cells_touch_and_contrast() -> None:
    img, lab = generate_image(3, "fluorescent", SyntheticOptions(n_cells=(30, 30)))
    # touching: some foreground pixel has a 4-neighbour of another instance
    right = (lab[:, :-1] > 0) & (lab[:, 1:] > 0) & (lab[:, :-1] != lab[:, 1:])
    down = (lab[:-1] > 0) & (lab[1:] > 0) & (lab[:-1] != lab[1:])
    assert right.any() or down.any()
    assert img[lab > 0].mean() > 2 * img[lab == 0].mean()
    _, phase_lab = generate_image(3, "phase", SyntheticOptions(n_cells=(30, 30)))
    assert phase_lab.max() >= 15


def test_unknown_look() -> None:
    with pytest.raises(ValueError, match="valid looks: fluorescent, phase"):
        generate_image(0, "brightfield")
