"""cellbench: a reproducible benchmark pipeline for cell and nucleus instance segmentation."""

__version__ = "0.2.0"
