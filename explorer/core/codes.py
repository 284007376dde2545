"""Latent codes in, images out: where a traversal starts (a test image, a prior sample, an upload,
a drawing) and one forward pass of the decoder, all through the model contract.

A problem the user can fix (an index out of range, an unreadable upload) raises ``InputError``
with a sentence that says what to do; the page shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from vaescope.contract import Generator
from vaescope.errors import InputError
from vaescope.explorer.core.embeddings import NO_DECODER
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.uploads import ImageError, prepare_image
from vaescope.explorer.core.values import whole


@dataclass(frozen=True)
class Code:
    """A latent code, where it came from, and the model it belongs to."""

    key: str  # the store key of the model whose code this is: a code never crosses models
    z: np.ndarray  # [D] float32
    z0: np.ndarray  # [D] the starting code; Reset returns here
    y: int | None  # the class it decodes with (a class-conditional model), else None
    source: str  # in words, for the info line
    image: np.ndarray | None = None  # the chosen input image [C, H, W] in [0, 1], when there was one
    index: int | None = None  # the evaluation image it is the code of, when it is one

    def moved(self, z: np.ndarray) -> Code:
        """The same start and condition at a new code z [D]."""
        return replace(self, z=z)

    def reset(self) -> Code:
        """Back to the starting code."""
        return replace(self, z=self.z0.copy())

    def with_class(self, y: int | None) -> Code:
        """The same code decoded under class ``y``."""
        return replace(self, y=y)


def decoder_of(entry: ModelEntry, what: str = "decode") -> Generator:
    """The entry's model when it decodes; InputError (there is no decoder) for precomputed codes."""
    found = entry.generator
    if found is None:
        raise InputError(NO_DECODER.format(what=what))
    return found


def decode(entry: ModelEntry, z: np.ndarray, y: int | None) -> np.ndarray:
    """Codes [D] or [M, D] -> images [M, C, H, W] float32 in [0, 1] (one forward pass)."""
    model, codes = decoder_of(entry), np.atleast_2d(np.asarray(z, np.float32))
    with torch.inference_mode():
        zt = torch.from_numpy(codes).to(model.device)
        condition = entry.description.condition.for_class(y, len(codes), model.device)
        return model.decode(zt, condition).float().cpu().numpy()


def prior_codes(entry: ModelEntry, n: int, seed: int, condition: int | None = None,
                temperature: float = 1.0) -> np.ndarray:
    """n codes [n, D] from the model's prior under a seeded generator."""
    model = decoder_of(entry, "sample")
    generator = torch.Generator(model.device).manual_seed(int(seed))
    with torch.inference_mode():
        return model.sample(n, condition, temperature, generator).float().cpu().numpy()


def prior_samples(entry: ModelEntry, n: int, seed: int = 0) -> np.ndarray:
    """n images from the prior [n, C, H, W]; a class-conditional model cycles its classes."""
    z = prior_codes(entry, n, seed)
    classes = [c for _, c in entry.description.condition.class_choices(entry.description.class_names)]
    if not classes:
        return decode(entry, z, None)
    return np.concatenate([decode(entry, z[i], classes[i % len(classes)]) for i in range(n)])


def class_of(entry: ModelEntry, y: int | None) -> int | None:
    """The decoder condition for a chosen class: the class (0 if none chosen) when the model
    decodes with one, else None."""
    try:
        return entry.description.condition.decoder_class(None if y is None else int(y))
    except ValueError as exc:
        raise InputError(str(exc)) from None


ITEM_NOUNS = {"image": "image", "line": "sequence", "features": "row"}  # by Description.display


def item_noun(entry: ModelEntry) -> str:
    """What one of the model's inputs is called on the page: an "image", a "sequence" (a line
    display) or a "row" (a table's features), as in "test row #12"."""
    return ITEM_NOUNS.get(str(getattr(entry.description, "display", "image")), "image")


def index_code(entry: ModelEntry, index: int | None) -> Code:
    """The posterior mean of evaluation image ``index``; a class-conditional model decodes it
    under its own class."""
    if not entry.has_points:
        raise InputError(f"No evaluation images: {entry.data_note}. Start from a prior sample or an upload.")
    latents = entry.latents
    n = len(latents)
    noun = item_noun(entry)
    i = whole(index, f"Test {noun} #", 0, n - 1, default=0)
    z = latents.mean[i].astype(np.float32)
    label = int(latents.labels[i])
    what = f"test {noun} #{i}" + (f" (class {entry.description.class_name(label)})" if label >= 0 else "")
    return Code(entry.key, z.copy(), z, class_of(entry, label) if label >= 0 else class_of(entry, None),
                what, latents.image(i), i)


def random_code(entry: ModelEntry, y: int | None, seed: int | None = None) -> Code:
    """A prior sample under a fresh seed (or ``seed``), which the info line names so it can be found again."""
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)
    z = prior_codes(entry, 1, seed)[0]
    return Code(entry.key, z.copy(), z, class_of(entry, y), f"a prior sample (seed {seed})")


def encode_image(entry: ModelEntry, data: bytes | np.ndarray, y: int | None, source: str) -> tuple[Code, str]:
    """prepare_image + encode: the posterior mean of an image, and the note of its conversion."""
    model, description = decoder_of(entry, "encode"), entry.description
    try:
        x, note = prepare_image(data, description.image_shape, background=entry.background or "dark")
    except ImageError as exc:
        raise ImageError(f"Cannot use {source.removeprefix('uploaded ')}: {exc}") from None
    cond = class_of(entry, y)
    with torch.inference_mode():
        xt = torch.from_numpy(x[None]).to(model.device)
        condition = description.condition.for_class(cond, 1, model.device)
        z = model.encode(xt, condition).mean[0].float().cpu().numpy()
    return Code(entry.key, z.copy(), z, cond, source + (f" ({note})" if note else ""), x), note
