"""vaescope: train variational autoencoders and look inside them, and inside any autoencoder.

The installed package is ``vaescope``; the repository's ``training/`` and ``explorer/`` folders are
installed beneath it as ``vaescope.training`` and ``vaescope.explorer``.
"""

__version__ = "0.2.0"
