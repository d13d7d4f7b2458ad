"""objcrop: self-supervised pretraining with object-aware cropping, measured end to end.

The core package holds what every stage shares: the CLI entry, datasets,
config helpers and file I/O. It imports no stage (docs/ARCHITECTURE.md).
"""
__version__ = "0.1.0"
