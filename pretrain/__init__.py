"""objcrop.pretrain: proposals, view policies, SSL methods, trainer and linear probe.

Imports no detectron2 (DESIGN.md): pretraining and the probe run on any
machine with PyTorch.
"""
