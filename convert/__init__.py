"""objcrop.convert: pretraining checkpoints → detectron2 weights, verified."""
