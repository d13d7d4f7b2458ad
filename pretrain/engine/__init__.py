"""The pretraining engine: data, checkpoints, the optimiser, the training loop and its hooks, the run record."""
