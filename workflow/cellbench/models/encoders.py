"""The encoder names segmentation-models-pytorch accepts, known without importing torch.

``SMP_ENCODERS`` is smp 0.6.0's ``smp.encoders.get_encoder_names()``;
``tests/unit/test_options.py`` checks it against the installed smp, so an upgrade that
adds or removes encoders fails the tests until this list is regenerated with
``python -m cellbench.models.encoders``. Names ``tu-<timm model>`` select any timm
model as the encoder; they are checked against ``timm.list_models()`` by
``cellbench validate`` (which may import timm), not at Snakefile parse time.
"""

from __future__ import annotations

__all__ = ["SMP_ENCODERS", "TIMM_PREFIX", "check_encoder", "check_timm_encoder"]

TIMM_PREFIX = "tu-"

SMP_ENCODERS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x4d",
    "resnext101_32x8d",
    "resnext101_32x16d",
    "resnext101_32x32d",
    "resnext101_32x48d",
    "dpn68",
    "dpn68b",
    "dpn92",
    "dpn98",
    "dpn107",
    "dpn131",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "senet154",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "se_resnext50_32x4d",
    "se_resnext101_32x4d",
    "densenet121",
    "densenet169",
    "densenet201",
    "densenet161",
    "inceptionresnetv2",
    "inceptionv4",
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnet-b2",
    "efficientnet-b3",
    "efficientnet-b4",
    "efficientnet-b5",
    "efficientnet-b6",
    "efficientnet-b7",
    "mobilenet_v2",
    "xception",
    "timm-efficientnet-b0",
    "timm-efficientnet-b1",
    "timm-efficientnet-b2",
    "timm-efficientnet-b3",
    "timm-efficientnet-b4",
    "timm-efficientnet-b5",
    "timm-efficientnet-b6",
    "timm-efficientnet-b7",
    "timm-efficientnet-b8",
    "timm-efficientnet-l2",
    "timm-tf_efficientnet_lite0",
    "timm-tf_efficientnet_lite1",
    "timm-tf_efficientnet_lite2",
    "timm-tf_efficientnet_lite3",
    "timm-tf_efficientnet_lite4",
    "timm-skresnet18",
    "timm-skresnet34",
    "timm-skresnext50_32x4d",
    "mit_b0",
    "mit_b1",
    "mit_b2",
    "mit_b3",
    "mit_b4",
    "mit_b5",
    "mobileone_s0",
    "mobileone_s1",
    "mobileone_s2",
    "mobileone_s3",
    "mobileone_s4",
)


def check_encoder(name: str) -> str:
    """Return ``name`` if smp knows it (or it is a ``tu-`` timm name); else ValueError."""
    if name in SMP_ENCODERS or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return name
    import difflib

    close = difflib.get_close_matches(name, SMP_ENCODERS, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"unknown encoder {name!r}; {hint}segmentation-models-pytorch encoders: "
        f"{', '.join(SMP_ENCODERS[:8])}, ... ({len(SMP_ENCODERS)} in all, "
        f"`cellbench options unet` lists them), or 'tu-<timm model name>'"
    )


def check_timm_encoder(name: str) -> str | None:
    """For a ``tu-`` name, a message if timm does not know the model (imports timm); else None."""
    if not name.startswith(TIMM_PREFIX):
        return None
    import difflib

    import timm

    model = name[len(TIMM_PREFIX) :]
    known = timm.list_models()
    if model in known:
        return None
    close = difflib.get_close_matches(model, known, n=3)
    hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
    return f"encoder {name!r}: timm has no model {model!r}.{hint}"


def _generate() -> str:
    """The SMP_ENCODERS literal of the installed smp (``python -m cellbench.models.encoders``)."""
    import segmentation_models_pytorch as smp

    names = smp.encoders.get_encoder_names()
    return "SMP_ENCODERS: tuple[str, ...] = (\n" + "".join(f'    "{n}",\n' for n in names) + ")"


if __name__ == "__main__":
    print(_generate())
