"""Torch device selection, shared by training, inference and post-processing."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(device: str = "auto"):
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
