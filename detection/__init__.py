"""objcrop.detection: detectron2 registration, trainer and multi-seed runner."""
