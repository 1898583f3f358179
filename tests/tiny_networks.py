"""The smallest network settings the unit and integration tests train (seconds on a CPU).

Each test adds what it is about: ``{**TINY_NETWORK, "epochs": 4, ...}``.
"""

TINY_NETWORK = {
    "encoder": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [16, 16, 16],
    "epochs": 2,
    "batch_size": 2,
    "patch_size": 64,
    "samples_per_epoch": 4,
}
