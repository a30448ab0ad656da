"""Training: the trainer (loop, DDP, validation), checkpoints and weights, plots."""
