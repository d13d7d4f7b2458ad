"""The pretraining engine: data, distributed helpers, checkpoints and the training loop."""
