"""Network inference on one image: padding, whole-image or tiled prediction.

Pure (arrays in, arrays out); used by training (validation maps for threshold
tuning) and by the predict / segment stages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cellbench.models.base import ModelFamily

__all__ = ["pad_to_multiple", "predict_maps"]


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(C, H, W)`` at the bottom/right to a multiple of ``multiple``.

    Returns the padded array and the original ``(H, W)``.
    """
    _, h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode), (h, w)


def _window(size: int) -> np.ndarray:
    ramp = np.hanning(size + 2)[1:-1].astype(np.float32) + 1e-3
    return np.outer(ramp, ramp)


def predict_maps(
    family: ModelFamily,
    net,
    image: np.ndarray,
    device=None,
    tile_size: int = 1024,
    overlap: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Maps ``(M, H, W)`` float32 for one normalised image ``(C, H, W)``.

    Families without a network compute their maps directly; networks run on
    the whole (padded) image when it fits in ``tile_size``, else tile by tile.

    Parameters
    ----------
    family : ModelFamily
        The model family (activation, or ``image_to_maps`` without a network).
    net : torch.nn.Module or None
        The network (``None`` for families without one).
    image : numpy.ndarray
        Normalised float32 ``(C, H, W)``.
    device : torch.device or str, optional
        Where ``net`` lives.
    tile_size : int
        Images larger than this (either side) are predicted tile by tile.
    overlap : int
        Overlap of neighbouring tiles, blended with a smooth window.
    progress : callable, optional
        Called as ``progress(done, total)`` after every tile; whole-image
        prediction (and families without a network) count as one tile, so it
        is called once with ``(1, 1)``.

    Returns
    -------
    numpy.ndarray
        float32 ``(M, H, W)``.
    """
    if not family.trainable:
        maps = family.image_to_maps(image)
        if progress is not None:
            progress(1, 1)
        return maps
    import torch

    net.eval()
    _, h, w = image.shape
    with torch.no_grad():
        if h <= tile_size and w <= tile_size:
            x, _ = pad_to_multiple(image, 32)
            out = family.activate(net(torch.from_numpy(x[None]).to(device)))
            maps = out[0, :, :h, :w].float().cpu().numpy()
            if progress is not None:
                progress(1, 1)
            return maps
        tile = tile_size
        step = tile - overlap
        padded, _ = pad_to_multiple(image, 32)
        padded = np.pad(
            padded,
            ((0, 0), (0, max(0, tile - padded.shape[1])), (0, max(0, tile - padded.shape[2]))),
            mode="edge",
        )
        ph, pw = padded.shape[1:]
        acc, norm = None, np.zeros((ph, pw), np.float32)
        win = _window(tile)
        ys = sorted({*range(0, ph - tile, step), ph - tile})
        xs = sorted({*range(0, pw - tile, step), pw - tile})
        total, done = len(ys) * len(xs), 0
        for y in ys:
            for x in xs:
                crop = padded[None, :, y : y + tile, x : x + tile]
                res = family.activate(net(torch.from_numpy(np.ascontiguousarray(crop)).to(device)))
                res = res[0].float().cpu().numpy()
                if acc is None:
                    acc = np.zeros((res.shape[0], ph, pw), np.float32)
                acc[:, y : y + tile, x : x + tile] += res * win
                norm[y : y + tile, x : x + tile] += win
                done += 1
                if progress is not None:
                    progress(done, total)
        return (acc / norm)[:, :h, :w]
