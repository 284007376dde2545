"""Maps that are ready: t-SNE and UMAP coordinates fitted once and kept in a small sidecar file
beside a checkpoint (``mnist/vae.safetensors`` -> ``mnist/vae.maps.npz``), so a shipped model's
map opens in a second instead of after a minute of fitting.

A sidecar holds, per set of evaluation images it was fitted on, the coordinates [N, dims] of each
method, keyed by the sha256 of those images and labels: the explorer uses them only when the images
it mapped are the very same (the dataset on this machine, or the sample the file carries), so a map
can never belong to other data. PCA is not stored (it fits in milliseconds). Sidecars are checked
like every file from outside: names, shapes and dtypes against the limits before any array is
read, and read with ``allow_pickle=False``. The checkpoint itself is never rewritten: each rewrite
would add the whole file to the git history of the shipped models.

``latent-maps FILE...`` writes sidecars for existing checkpoints; ``latent-train --embed-maps``
and ``vs.save(..., maps=True)`` write one beside a new checkpoint.

Examples:
    >>> sidecar_path("runs/vae/model.safetensors").name
    'model.maps.npz'
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vaescope.errors import InputError
from vaescope.limits import MAX_MAP_FILE_BYTES, MAX_MAP_POINTS

if TYPE_CHECKING:
    from vaescope.explorer.core.projection import Projection
    from vaescope.explorer.core.store import ModelEntry

log = logging.getLogger("vaescope.explorer")

STORED = (("umap", 2), ("tsne", 2))  # what a sidecar keeps: the two maps that take a minute to fit
SUFFIX = ".maps.npz"
_NAME = re.compile(r"(?P<digest>[0-9a-f]{16})-(?P<method>tsne|umap)-(?P<dims>[23])d\.npy")


class MapFileError(InputError):
    """A maps sidecar cannot be used; the map is then fitted as usual."""


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """Where the maps of ``checkpoint`` live: beside it, ``NAME.maps.npz``."""
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(".safetensors") + SUFFIX)


def images_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """16 hex digits of the sha256 of uint8 images [N, C, H, W] and labels [N]: what a map was fitted on."""
    digest = hashlib.sha256()
    digest.update(f"{list(images.shape)}|".encode())
    digest.update(np.ascontiguousarray(images, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return digest.hexdigest()[:16]


def read_maps(path: Path, digest: str, n: int) -> dict[tuple[str, int], np.ndarray]:
    """The coordinates a sidecar holds for the images with ``digest`` ({(method, dims): [n, dims]}),
    or {} when it holds none for them. MapFileError for a file that is not a sidecar."""
    try:
        size = path.stat().st_size
        if size > MAX_MAP_FILE_BYTES:
            raise MapFileError(f"{path.name} is {size:,} bytes; a maps file has at most {MAX_MAP_FILE_BYTES:,}")
        found: dict[tuple[str, int], np.ndarray] = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                match = _NAME.fullmatch(info.filename)
                if match is None:
                    raise MapFileError(f"{path.name} holds {info.filename[:60]!r}, which a maps file never does")
                if match["digest"] != digest:
                    continue
                dims = int(match["dims"])
                if not 0 < n <= MAX_MAP_POINTS or info.file_size > 256 + n * dims * 4:
                    raise MapFileError(f"{path.name}: {info.filename} is larger than {n} points in {dims}D")
                with archive.open(info) as fh:
                    coords = np.load(io.BytesIO(fh.read()), allow_pickle=False)
                if coords.dtype != np.float32 or coords.shape != (n, dims) or not np.isfinite(coords).all():
                    raise MapFileError(f"{path.name}: {info.filename} is {coords.dtype} {list(coords.shape)}, not "
                                       f"finite float32 [{n}, {dims}]")
                found[(match["method"], dims)] = coords
        return found
    except MapFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MapFileError(f"{path.name} is not a readable maps file ({type(exc).__name__})") from None


def write_maps(path: Path, digest: str, maps: dict[tuple[str, int], np.ndarray]) -> Path:
    """Add ``maps`` ({(method, dims): float32 [N, dims]}) for the images with ``digest`` to the
    sidecar at ``path`` (other images' maps in it are kept), atomically."""
    from vaescope.training.tensorfile import write_atomically

    kept: dict[str, np.ndarray] = {}
    if path.is_file():
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                match = _NAME.fullmatch(name)
                if match is not None and match["digest"] != digest:
                    with archive.open(name) as fh:
                        kept[name] = np.load(io.BytesIO(fh.read()), allow_pickle=False)
    for (method, dims), coords in maps.items():
        kept[f"{digest}-{method}-{dims}d.npy"] = np.ascontiguousarray(coords, np.float32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in sorted(kept.items()):
            data = io.BytesIO()
            np.save(data, array, allow_pickle=False)
            archive.writestr(name, data.getvalue())
    write_atomically(path, buffer.getvalue())
    return path


def prefitted(entry: ModelEntry, method: str, dims: int, indices: np.ndarray) -> Projection | None:
    """The map of ``entry`` from its sidecar, when it has one for these very images, this method
    and all of its points (``indices`` is every row); else None (then the map is fitted)."""
    from vaescope.explorer.core.projection import Projection

    latents = entry.latents
    if (method, dims) not in STORED or entry.path is None or latents is None or latents.images is None \
            or len(indices) != len(latents) or not np.array_equal(indices, np.arange(len(latents))):
        return None
    derived = entry.derived
    if not derived.maps_read:
        derived.maps_read = True
        path = sidecar_path(entry.path)
        if path.is_file():
            try:
                derived.maps = read_maps(path, images_digest(latents.images, latents.labels), len(latents))
            except MapFileError as exc:
                log.warning("ignoring %s", exc)
    coords = (derived.maps or {}).get((method, dims))
    return None if coords is None else Projection(method, dims, coords, latents.mean.astype(np.float32))


def default_method(entry: ModelEntry) -> str:
    """The projection a model's map opens with: UMAP when its sidecar holds a 2-D UMAP of all its
    evaluation images (the shipped models: it shows their structure at once, with nothing to fit),
    else PCA (fitted in a second at any size)."""
    latents = entry.latents
    if latents is None or not entry.has_points:
        return "pca"
    return "umap" if prefitted(entry, "umap", 2, np.arange(len(latents))) is not None else "pca"


def fit_maps(entry: ModelEntry, progress: bool = True) -> dict[tuple[str, int], np.ndarray]:
    """Fit every STORED map of ``entry``'s evaluation codes, as the explorer would."""
    from vaescope.explorer.core.projection import fit_projection

    report = (lambda f, d: print(f"  {d}", flush=True) if f == 0 else None) if progress else None  # noqa: E731
    return {(method, dims): fit_projection(entry.latents.mean, method, dims, progress=report).coords
            for method, dims in STORED}


def write_sidecar(file: Path, data_dir: str | os.PathLike | None = None, sample: bool = False,
                  say: Callable[[str], None] = print) -> Path:
    """Fit and write the maps sidecar of checkpoint ``file`` for the evaluation images the explorer
    finds for it here (and, with ``sample``, for the sample it carries); its path. InputError when
    the file cannot be opened or has no images to map."""
    import torch

    from vaescope.explorer.core.evaldata import EvalData
    from vaescope.explorer.core.store import ModelStore
    from vaescope.training.checkpoint import read_sample

    file = Path(file)
    store = ModelStore(file.parent, torch.device("cpu"), data_dir=data_dir)
    entry = store.open_path(file)
    if not entry.has_points or entry.latents.images is None:
        raise MapFileError(f"{file}: no evaluation images to map ({entry.data_note})")
    say(f"{file}: {entry.data_origin}")
    written = write_maps(sidecar_path(file), images_digest(entry.latents.images, entry.latents.labels),
                         fit_maps(entry, progress=say is print))
    carried = read_sample(file) if sample else None
    if carried is not None and not np.array_equal(carried[0], entry.latents.images):
        images, labels, _ = carried
        name = store.add_model(f"{file.name} (its sample)", entry.model, EvalData(images, labels, "its sample"))
        other = store.open_name(name)
        say(f"{file}: the {len(images):,} images it carries")
        written = write_maps(sidecar_path(file), images_digest(other.latents.images, other.latents.labels),
                             fit_maps(other, progress=say is print))
    say(f"wrote {written} ({written.stat().st_size:,} bytes)")
    return written


def main(argv: list[str] | None = None) -> int:
    """``latent-maps FILE...``: write the maps sidecar of each checkpoint, for the evaluation images
    the explorer finds for it on this machine (and, with --sample, for the sample it carries)."""
    import argparse

    parser = argparse.ArgumentParser(prog="latent-maps", description=main.__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="checkpoint files (.safetensors)")
    parser.add_argument("--data-dir", default=None, help="where datasets are looked for (as latent-explore)")
    parser.add_argument("--sample", action="store_true",
                        help="also fit the maps of the sample the file carries (what a machine without the "
                             "dataset maps)")
    args = parser.parse_args(argv)
    try:
        for file in args.files:
            write_sidecar(file, args.data_dir, args.sample, lambda words: print(words, flush=True))
    except InputError as exc:
        print(f"latent-maps: {exc}", flush=True)
        return 2
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
