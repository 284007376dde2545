"""The latent-space explorer: load a checkpoint, project, traverse, interpolate, sample, plot."""
