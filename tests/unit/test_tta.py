"""Test-time augmentation in :func:`cellbench.inference.predict_maps`: the 8 flips /
90-degree rotations, vector fields turned back, non-square images, tiles, progress."""

from __future__ import annotations

import numpy as np
import pytest
from cellbench.config import ModelConfig
from cellbench.inference import DIHEDRAL, apply_dihedral, invert_dihedral, predict_maps
from cellbench.models import get_family

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}

# np.rot90(axes=(1, 2)) turns a (dy, dx) vector by R; flipping columns negates dx.
ROT = np.array([[0.0, -1.0], [1.0, 0.0]])
FLIP_X = np.diag([1.0, -1.0])


def tiny_family(family: str):
    return get_family(ModelConfig("f", family, dict(TINY)))


class GradientNet(torch.nn.Module):
    """An exactly dihedral-equivariant "flow network".

    ``(B, C, H, W) -> (B, 3, H, W)``: 5 x the central-difference gradient
    ``(dy, dx)`` of channel 0 (reflect-padded, so 0 on every border, as after
    :func:`cellbench.inference.pad_to_multiple`) and a pointwise cell-probability logit.
    """

    def forward(self, x):
        c = x[:, :1]
        p = F.pad(c, (1, 1, 1, 1), mode="reflect")
        dy = (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1]) / 2
        dx = (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2]) / 2
        return torch.cat([5 * dy, 5 * dx, 4 * c - 2], dim=1)


def random_conv_net(out_channels: int = 3) -> torch.nn.Module:
    """A small random conv net with no symmetry: ``(B, 1, H, W) -> (B, out, H, W)``."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, out_channels, 5, padding=2),
    )
    return net.eval()


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Float32 ``(1, h, w)``: random, smoothed so gradients are not noise only."""
    from scipy import ndimage as ndi

    noise = np.random.default_rng(seed).random((h, w))
    return ndi.gaussian_filter(noise, 2.0)[None].astype(np.float32) * 4


def test_dihedral_transforms_are_distinct_and_invert_exactly() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((3, 5, 7)).astype(np.float32)
    seen = set()
    for t in DIHEDRAL:
        y = apply_dihedral(x, t, [(0, 1)])
        assert y.shape == ((3, 7, 5) if t[0] else (3, 5, 7))
        seen.add(y.tobytes())
        np.testing.assert_array_equal(invert_dihedral(y, t, [(0, 1)]), x)
    assert DIHEDRAL[0] == (False, False, False) and len(seen) == 8
    with pytest.raises(ValueError, match="vector pairs"):
        invert_dihedral(x[:1], DIHEDRAL[3], [(0, 1)])


def test_tta_of_an_equivariant_network_is_the_plain_prediction() -> None:
    family = tiny_family("flow")
    net = GradientNet()
    image = smooth_image(50, 77)  # non-square, padded to 64 x 96 (reflect)
    plain = predict_maps(family, net, image, "cpu", tta=False)
    tta = predict_maps(family, net, image, "cpu", tta=True)
    assert plain.shape == tta.shape == (3, 50, 77) and tta.dtype == np.float32
    assert np.abs(plain[:2]).max() > 0.05  # a real vector field
    np.testing.assert_allclose(tta, plain, atol=1e-6)
    # the test is sensitive to the vector handling: turning only the pixels, not the
    # vectors, gives something else
    wrong = np.mean(
        [
            invert_dihedral(
                predict_maps(
                    family, net, np.ascontiguousarray(apply_dihedral(image, t)), "cpu", tta=False
                ),
                t,
            )
            for t in DIHEDRAL
        ],
        axis=0,
    )
    assert np.abs(wrong[:2] - plain[:2]).max() > 0.05


def test_tta_is_the_mean_of_the_eight_inverted_predictions() -> None:
    family = tiny_family("flow")
    net = random_conv_net()
    image = smooth_image(40, 70, seed=2)
    expected = []
    for k in range(4):
        for flip in (False, True):
            # transform with numpy's own rotation, independently of apply_dihedral
            x = np.flip(image, 2) if flip else image
            x = np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))
            out = predict_maps(family, net, x, "cpu", tta=False)
            back = np.rot90(out, -k, axes=(1, 2))
            back = np.flip(back, 2) if flip else back
            turn = np.linalg.matrix_power(ROT, k) @ (FLIP_X if flip else np.eye(2))
            vectors = np.einsum("ij,jhw->ihw", np.linalg.inv(turn), back[:2])
            expected.append(np.concatenate([vectors, back[2:]]))
    expected = np.mean(expected, axis=0)
    tta = predict_maps(family, net, image, "cpu", tta=True)
    plain = predict_maps(family, net, image, "cpu", tta=False)
    assert tta.shape == (3, 40, 70)
    assert np.abs(tta - plain).max() > 1e-2  # the network is not equivariant
    np.testing.assert_allclose(tta, expected, atol=1e-5)


def test_tta_keeps_softmax_maps_probabilities_and_reports_progress() -> None:
    torch.manual_seed(0)
    family = tiny_family("unet")
    net = family.build_network().eval()
    image = smooth_image(70, 100, seed=3)
    calls: list[tuple[int, int]] = []
    maps = predict_maps(family, net, image, "cpu", tta=True, progress=lambda *a: calls.append(a))
    assert maps.shape == (3, 70, 100) and maps.min() >= 0
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-5)
    assert calls == [(i, 8) for i in range(1, 9)]


def test_tiled_tta_matches_whole_image_tta() -> None:
    torch.manual_seed(0)
    family = tiny_family("unet")
    net = family.build_network().eval()
    image = smooth_image(150, 170, seed=4)
    calls: list[tuple[int, int]] = []
    predict_maps(family, net, image, "cpu", 96, 32, progress=lambda *a: calls.append(a), tta=False)
    tiles = calls[-1][1]
    calls.clear()
    tiled = predict_maps(family, net, image, "cpu", 96, 32, lambda *a: calls.append(a), tta=True)
    assert tiles > 1 and calls == [(i, 8 * tiles) for i in range(1, 8 * tiles + 1)]
    whole = predict_maps(family, net, image, "cpu", tta=True)
    assert whole.shape == tiled.shape == (3, 150, 170)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(whole - tiled).mean() < 0.03
    # flows: tiles of the equivariant network differ only near tile borders
    flow = tiny_family("flow")
    grad = GradientNet()
    whole = predict_maps(flow, grad, image, "cpu", tta=True)
    tiled = predict_maps(flow, grad, image, "cpu", 96, 32, tta=True)
    assert np.abs(whole - tiled).mean() < 1e-4


def test_tta_is_ignored_without_a_network() -> None:
    family = get_family(ModelConfig("c", "classical", {}))
    image = smooth_image(40, 50)
    np.testing.assert_array_equal(
        predict_maps(family, None, image, tta=True), predict_maps(family, None, image, tta=False)
    )
