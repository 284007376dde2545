"""vaescope training package: datasets, autoencoder-family models, the training loop, checkpoints."""
