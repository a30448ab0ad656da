"""Data: the volume cache and its build, the preprocessing record, grids and resampling,
orientation, and the dataset the trainer's loaders read."""
