"""ConvLSTM autoencoders (plain and variational), their training and inference, in plain torch.

Nothing here is imported by the code location at load time: torch is heavy, so the Dagster layer
imports these modules inside the functions that need them. This file therefore imports nothing.

Modules, one job each:

- ``defaults``: the training defaults, written once (imports nothing).
- ``convlstm``: the `ConvLSTM` layer.
- ``autoencoder``: `ModelConfig` and `ConvLSTMAutoencoder` (``forward(x, valid)`` returns the
  reconstruction and its losses; ``encode``; ``decode``).
- ``normalise``: the per-galaxy scale and asinh stretch (`Normalisation`) and its inverse.
- ``augment``: the eight sky symmetries.
- ``dataset``: `build_training_set` / `open_training_set` (memory-mapped arrays and an index),
  the batch loader, and `read_cube` (a cube's arrays from `manga_assets.cubes.cube_file`, checked
  against the model's lines and grid).
- ``train``: `TrainConfig`, `train_model`, `baseline_chi_square`, `evaluate`.
- ``distributed``: `DistributedConfig` and the DDP processes `train_model` starts with it.
- ``checkpoint``: `save_model` / `load_model` (state_dict + config.json + metrics.json).
- ``inference``: `embed` / `embed_cubes` (latents and reconstruction errors).
"""
