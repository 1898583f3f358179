"""Torch device selection, shared by training, inference and post-processing."""

from __future__ import annotations

import logging

__all__ = ["native_bf16", "resolve_channels_last", "resolve_device", "resolve_precision"]

log = logging.getLogger("cellbench")


def resolve_device(device: str = "auto"):
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively (not emulated).

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer). CPU: oneDNN's own
    check (AVX-512 BF16 or AMX; an AVX2-only CPU emulates bf16 and trains several
    times slower than in fp32: BENCHMARKS.md section 18). Any other device: False.
    """
    import torch

    kind = getattr(device, "type", str(device)).split(":")[0]
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:  # a build without oneDNN
            return False
    return False


def resolve_precision(precision: str, device, *, native: bool | None = None) -> str:
    """The training arithmetic actually used: ``"fp32"`` or ``"bf16"``.

    Parameters
    ----------
    precision : the ``precision`` option: ``fp32``, ``bf16`` or ``auto`` (bf16 where
        ``device`` computes it natively, else fp32).
    device : the training torch device (or its name).
    native : whether the device computes bf16 natively; None asks :func:`native_bf16`.

    Returns
    -------
    str
        ``auto`` resolved; ``bf16`` is kept on a device that only emulates it (as asked,
        so a run stays comparable), with a warning that names the faster setting.
    """
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if native is None:
        native = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if not native:
        log.warning(
            "precision bf16 on %s, which has no native bf16 arithmetic: autocast emulates it and "
            "trains several times slower than fp32 (an AVX2-only CPU: about 10x). Set the "
            "model's precision to auto (bf16 only where native) or fp32 in params.yaml",
            device,
        )
    return "bf16"


def resolve_channels_last(channels_last: bool | str, arithmetic: str) -> bool:
    """Whether training uses NHWC (channels-last) tensors.

    ``channels_last`` is the option (``True``, ``False`` or ``"auto"``); ``auto`` is on
    with bf16 only: oneDNN's bf16 convolutions want NHWC (bf16 + NHWC 2.5-3.6x fp32),
    while in fp32 NHWC was 12-27 % slower than NCHW on both CPUs measured (BENCHMARKS.md
    sections 13 and 18). ``arithmetic`` is the resolved precision (:func:`resolve_precision`).
    """
    if channels_last == "auto":
        return arithmetic == "bf16"
    if isinstance(channels_last, bool):
        return channels_last
    raise ValueError(f"channels_last must be true, false or 'auto', got {channels_last!r}")
