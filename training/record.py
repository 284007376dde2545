"""The training record: the posterior means of fixed test images as the model trains (issue 25).

``latent-train --record N`` picks N test images (a seeded subset, the same for every frame) and
encodes them (``encode(x).mean``) at these moments:

- at initialisation (epoch 0), before any training step;
- at 1/4, 1/2 and 3/4 of the first epoch, where most of the structure appears;
- at the end of every epoch (every k-th epoch when a run is longer than ``EPOCH_FRAMES`` epochs,
  and always the last one);
- for a GMVAE, just before and just after its component initialisation (and its final refit), at
  the same epoch, since that is where its clusters are set. The after-frame is kept only when the
  codes changed: the mean-field GMVAE (the one that has a component initialisation) keeps its
  encoder, so its codes do not move there, only the mixture that will pull them from then on.

The frames are stored in the checkpoint, and in the resume state so that ``--resume`` continues
the same record, as ``record.*`` tensors (``embedded.py``): codes float16 [E, N, D], labels [N],
epochs float32 [E] and the images' test-split indices [N]. 2,000 points of a 16-d code over 20
epochs are 24 frames, 1.5 MB. Recording draws no random numbers and leaves the model's mode as it
was, so a run trains to the same weights with or without a record.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vaescope.limits import MAX_RECORD_BYTES, MAX_RECORD_FRAMES, MAX_RECORD_POINTS
from vaescope.training.checks import ConfigError
from vaescope.training.data import Split
from vaescope.training.embedded import (
    FLOAT16_MAX,
    RECORD_CODES,
    RECORD_EPOCHS,
    RECORD_INDICES,
    RECORD_LABELS,
    Record,
    subset_indices,
)
from vaescope.training.metrics import float_batch
from vaescope.training.models import LatentModel

EPOCH_FRAMES = 100  # end-of-epoch frames a run records at most (about): a longer run records every k-th epoch
MID_EPOCH = (0.25, 0.5, 0.75)  # fractions of the first epoch with a frame of their own
# Frames besides the end-of-epoch ones: initialisation, the three of the first epoch, the extra frames
# around a GMVAE's component initialisation and its refit, and the last epoch when the stride skips it.
OTHER_FRAMES = 1 + len(MID_EPOCH) + 2 + 1
TARGET_BYTES = 8 << 20  # latent-train keeps a record under this by recording fewer points of a wide code
ENCODE_BATCH = 1024


class Recorder:
    """Collects the frames of one run (rank 0 only). ``capture`` adds one; ``tensors`` gives the
    ``record.*`` tensors to write."""

    def __init__(self, test: Split, indices: np.ndarray, latent_dim: int, epochs: int) -> None:
        self.indices = np.asarray(indices, np.int64)
        picked = torch.from_numpy(self.indices)
        self.images, self.labels = test.images[picked], test.labels[picked]
        self.latent_dim = latent_dim
        self.stride = max(1, math.ceil(epochs / EPOCH_FRAMES))
        frame_bytes = len(self.indices) * latent_dim * 2
        self.capacity = min(MAX_RECORD_FRAMES, MAX_RECORD_BYTES // frame_bytes)
        self.codes: list[np.ndarray] = []  # float16 [N, D] each
        self.epochs: list[float] = []

    @classmethod
    def create(cls, test: Split, points: int, seed: int, latent_dim: int, epochs: int) -> Recorder | None:
        """A recorder of ``points`` test images (a seeded subset; None for 0). Fewer points are taken
        when the record would pass ``TARGET_BYTES`` (a code of hundreds of dimensions)."""
        if points <= 0:
            return None
        frames = OTHER_FRAMES + min(epochs, EPOCH_FRAMES)
        fit = TARGET_BYTES // (frames * latent_dim * 2)
        n = min(points, len(test), MAX_RECORD_POINTS, fit)
        if n < 1:
            return None
        return cls(test, subset_indices(len(test), n, seed), latent_dim, epochs)

    @classmethod
    def resumed(cls, test: Split, saved: dict[str, Tensor], latent_dim: int, epochs: int) -> Recorder:
        """The recorder of a resumed run: the saved frames and points (``record.*`` tensors of its
        resume state), checked against the test split they were taken from."""
        indices = saved[RECORD_INDICES].numpy()
        if len(indices) and int(indices.max()) >= len(test):
            raise ConfigError(f"the resume state records test image {int(indices.max())} but the test split has "
                              f"{len(test)} images: the dataset differs from the run's")
        recorder = cls(test, indices, latent_dim, epochs)
        if not torch.equal(recorder.labels, saved[RECORD_LABELS]):
            raise ConfigError("the resume state's recorded labels differ from the test split's: the dataset "
                              "differs from the run's")
        recorder.codes = list(saved[RECORD_CODES].numpy())
        recorder.epochs = [float(e) for e in saved[RECORD_EPOCHS]]
        return recorder

    def mid_epoch_batches(self, n_batches: int) -> dict[int, float]:
        """Batch index -> fractional epoch of the first epoch's frames: taken before batch b, after
        b of ``n_batches`` steps (so 3 of 12 is epoch 0.25)."""
        found = {round(f * n_batches) for f in MID_EPOCH}
        return {b: b / n_batches for b in sorted(found) if 0 < b < n_batches}

    def due(self, epochs_done: int, total_epochs: int) -> bool:
        """Whether the end of epoch ``epochs_done`` gets a frame."""
        return epochs_done % self.stride == 0 or epochs_done == total_epochs

    @torch.no_grad()
    def capture(self, model: LatentModel, epoch: float) -> None:
        """Encode the recorded images with ``model`` and keep their posterior means as the frame of
        ``epoch``. The RNG states and the model's mode are left as they were. A frame identical to
        the last one at the same epoch is not kept. When the record is full (``capacity`` frames)
        the new frame replaces the last one, so the final state is kept."""
        was_training = model.training
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(model.device) if model.device.type == "cuda" else None
        model.eval()
        try:
            parts = []
            for start in range(0, len(self.images), ENCODE_BATCH):
                x = float_batch(self.images[start:start + ENCODE_BATCH], model.device)
                y = model.condition.from_labels(self.labels[start:start + ENCODE_BATCH].to(model.device))
                mean = model.encode(x, y).mean.float().clamp(-FLOAT16_MAX, FLOAT16_MAX)
                parts.append(mean.to(torch.float16).cpu())
        finally:
            model.train(was_training)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, model.device)
        frame = torch.cat(parts).numpy()
        if self.epochs and self.epochs[-1] == float(epoch) and np.array_equal(self.codes[-1], frame):
            return  # the same moment, the same codes: nothing new to show
        if len(self.codes) >= self.capacity:
            self.codes[-1], self.epochs[-1] = frame, float(epoch)
        else:
            self.codes.append(frame)
            self.epochs.append(float(epoch))

    def record(self) -> Record | None:
        """The frames so far (None before the first)."""
        if not self.codes:
            return None
        return Record(np.stack(self.codes), self.labels.numpy(), np.asarray(self.epochs, np.float32), self.indices)

    def tensors(self) -> dict[str, Tensor]:
        """The ``record.*`` tensors of the frames so far (none before the first)."""
        record = self.record()
        return {} if record is None else record.to_tensors()
