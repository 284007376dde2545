"""The server's shared store of models: loaded once, encoded once, bounded, single-flight.

Sessions keep only a key; the model, its description and its latents live here once, however many
browser tabs look at them. Two kinds of source feed it:

- checkpoint files, from the folder the operator named or uploaded (``open_name`` / ``open_path``):
  cached by content hash in a bounded LRU, reloaded from their file when asked for after eviction;
- models handed over in-process (``add_model``, what ``vs.explore`` uses): kept for the app's life,
  since nothing could rebuild them.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaescope.bundle import is_bundle, load_bundle
from vaescope.contract import (
    Description,
    ExplorableModel,
    Generator,
    check_contract,
    generator_of,
    prior_of,
)
from vaescope.errors import InputError
from vaescope.explorer.core.checkpoints import file_digest, list_checkpoints, resolve_checkpoint
from vaescope.explorer.core.embeddings import EmbeddingsModel, EmbeddingTable
from vaescope.explorer.core.evaldata import EvalData, NoEvalData, resolve_eval_data
from vaescope.explorer.core.latents import LatentsCache, encode_dataset
from vaescope.explorer.core.locks import KeyedLocks
from vaescope.explorer.core.uploads import dataset_background
from vaescope.limits import (
    MAX_EMBEDDING_MAP_POINTS,
    MAX_MAP_POINTS,
    MAX_MODELS_IN_MEMORY,
    MAX_MODELS_KNOWN,
)
from vaescope.training.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_sample,
)

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

    from vaescope.explorer.core.dims import DimInfo
    from vaescope.explorer.core.measures import Probe
    from vaescope.training.embedded import Record

Progress = Callable[[float, str], None]
EmbeddedSample = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # images, labels, factors
log = logging.getLogger("vaescope.explorer")


@dataclass
class Derived:
    """What the views derive once from a model and its evaluation codes, each field filled by the
    function that computes it on first use (named beside it) and kept for the entry's life."""

    dim_info: DimInfo | None = None  # dims.dim_info: the dimensions' order and scores
    slider_bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # dims.slider_bounds, by range
    anomaly_scores: dict[str, np.ndarray] = field(default_factory=dict)  # scores.test_scores, by score key
    ood_scores: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # scores.ood_scores, by dataset and folder
    ood_aurocs: dict[str, dict[str, float]] = field(default_factory=dict)  # measures.ood_aurocs, by the other's key
    pixel_probe: Probe | None = None  # measures.pixel_probe
    code_tree: cKDTree | None = None  # measures.path_gap: a KD-tree of the evaluation codes
    neighbour_distance: float | None = None  # measures.path_gap: the median distance to the nearest code
    walks: dict[tuple[str, int, int], tuple[int, int]] = field(default_factory=dict)  # measures.clearest_walk, by the other's key
    mig: tuple[float, dict[str, float]] | None = None  # measures.factor_mig
    record: Record | None = None  # timeline.training_timeline: the checkpoint's training record ...
    record_read: bool = False  # ... once it was looked for (None then means the file has none)
    timeline: dict[str, Any] | None = None  # timeline.training_timeline: the record's animated map, as a dict
    breakdown: tuple[list[float], list[float], list[float]] | None = None  # lessons: the denoising curve
    maps: dict[tuple[str, int], np.ndarray] | None = None  # mapfiles.prefitted: the sidecar's maps ...
    maps_read: bool = False  # ... once it was looked for


@dataclass
class ModelEntry:
    """A model and what was derived from it once, shared by every session."""

    key: str  # the store's key: a file's sha256, or "memory:N" for a model handed over in-process
    name: str  # what the user sees: the path in the checkpoint folder, an upload's name, a given name
    model: ExplorableModel
    description: Description
    latents: LatentsCache | None
    data_note: str  # "" when evaluation images are there, else why not
    data_origin: str = ""  # where the evaluation images came from, in words
    meta: CheckpointMeta | None = None  # a checkpoint's history, metrics and dataset block
    background: str | None = None  # "dark" / "light" background of the evaluation images
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # What the views derive from the model and latents alone, computed on first use: a slider move
    # must not recompute a variance over 70k codes.
    derived: Derived = field(default_factory=lambda: Derived(), repr=False)
    path: Path | None = None  # the file it was read from (None: a model handed over in-process)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.meta.history) if self.meta is not None else []

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.metrics) if self.meta is not None else {}

    @property
    def dataset_name(self) -> str:
        """The training dataset's name, when the model says."""
        return str((self.meta.dataset or {}).get("name", "")) if self.meta is not None else ""

    @property
    def generator(self) -> Generator | None:
        """The model when it encodes and decodes; None for precomputed codes. The one place the
        explorer asks what a source can do: panels that decode show or hide by it, and
        ``codes.decode`` / ``codes.prior_codes`` refuse without it."""
        return generator_of(self.model)

    @property
    def has_prior(self) -> bool:
        """Whether the model's ``sample`` draws from a prior it was trained towards (not an AE's
        stand-in N(0, I)): the map's prior overlay, the KL colouring, the slider range and the
        −ELBO score follow it."""
        return self.generator is not None and prior_of(self.generator) is not None

    @property
    def has_points(self) -> bool:
        return self.latents is not None and len(self.latents) > 0


@dataclass
class _MemorySource:
    name: str
    model: ExplorableModel
    data: EvalData | None
    meta: CheckpointMeta | None


class ModelStore:
    """Thread-safe LRU of loaded models with single-flight loading (see the module docstring).

    ``root`` is the checkpoint folder the operator named (None: in-process models only);
    ``data_dir`` where datasets are looked for. A model's map holds at most ``max_points``
    evaluation images (each is encoded and kept with its image); an embeddings map holds up to
    ``max_embedding_points`` codes (they cost 4 bytes a value, and the table is used as it is).
    """

    def __init__(self, root: Path | None, device: torch.device, data_dir: str | Path | None = None,
                 max_models: int = MAX_MODELS_IN_MEMORY, max_points: int = MAX_MAP_POINTS,
                 max_embedding_points: int = MAX_EMBEDDING_MAP_POINTS) -> None:
        self.root = None if root is None else Path(root).expanduser()
        self.device = torch.device(device)
        self.data_dir = data_dir
        self.max_models = max_models
        self.max_points = max_points
        self.max_embedding_points = max_embedding_points
        self._entries: OrderedDict[str, ModelEntry] = OrderedDict()  # file-backed, evictable
        self._memory: dict[str, _MemorySource] = {}  # name -> in-process source, never evicted
        self._files: dict[str, Path] = {}  # name -> a checkpoint file named outside the folder
        self._tables: dict[str, EmbeddingTable] = {}  # name -> precomputed codes
        self._pinned: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self._loading = KeyedLocks()  # single flight per file digest / in-process model
        # digest -> (path, name) of files loaded before, to reload after eviction (bounded LRU)
        self._known: OrderedDict[str, tuple[Path, str]] = OrderedDict()
        self._counter = itertools.count()

    # -- what can be opened ---------------------------------------------------------------------
    def names(self) -> list[str]:
        """The dropdown's choices: in-process models first, then the folder's checkpoints."""
        folder = list_checkpoints(self.root) if self.root is not None else []
        given = [*self._memory, *self._tables, *self._files]
        return [*given, *(n for n in folder if n not in given)]

    def add_model(self, name: str, model: ExplorableModel, data: EvalData | None = None,
                  meta: CheckpointMeta | None = None) -> str:
        """Register a model handed over in-process under ``name``; it is loaded when first opened."""
        check_contract(model)
        with self._lock:
            self._memory[name] = _MemorySource(name, model, data, meta)
        return name

    def add_embeddings(self, name: str, table: EmbeddingTable) -> str:
        """Register precomputed codes (an embeddings file, or arrays given to vs.explore) under ``name``."""
        with self._lock:
            self._tables[name] = table
        return name

    def add_file(self, path: Path, name: str) -> str:
        """List one checkpoint file the operator named directly (``vs.explore("model.safetensors")``)."""
        with self._lock:
            self._files[name] = Path(path)
        return name

    # -- entries ----------------------------------------------------------------------------------
    def peek(self, key: str | None) -> ModelEntry | None:
        """The entry for ``key`` if it is in memory now, else None; never loads (sliders use this)."""
        if key is None:
            return None
        with self._lock:
            entry = self._pinned.get(key) or self._entries.get(key)
            if entry is not None and key in self._entries:
                self._entries.move_to_end(key)
            return entry

    def get(self, key: str) -> ModelEntry:
        """The entry for a key handed out earlier, reloaded from its file if it was evicted.

        Raises KeyError for a key never seen, or whose file has gone since.
        """
        entry = self.peek(key)
        if entry is not None:
            return entry
        with self._lock:
            if key not in self._known:
                raise KeyError(key)
            path, name = self._known[key]
        if not path.is_file():
            raise KeyError(key)
        return self.open_path(path, name)

    def warm(self, key: str) -> None:
        """Reload an evicted model in a background thread (single-flight: ``open_path`` waits for a
        load already under way), so that a slider never waits for it."""
        with self._lock:
            known = self._known.get(key)
        if known is None or self.peek(key) is not None:
            return

        def load() -> None:
            try:
                self.open_path(*known)
            except Exception:  # noqa: BLE001 - reported when the page asks for the model again
                log.warning("reloading %s in the background failed", known[1], exc_info=True)

        threading.Thread(target=load, name=f"vaescope-warm-{key[:8]}", daemon=True).start()

    def open_name(self, name: str, progress: Progress | None = None) -> ModelEntry:
        """Open a dropdown choice: an in-process model, or a checkpoint in the folder (relative
        path). Raises CheckpointError for anything that cannot be opened."""
        source = self._memory.get(name)
        if source is not None:
            return self._open_memory(source, progress)
        if name in self._files:
            return self.open_path(self._files[name], name, progress)
        if name in self._tables:
            return self._open_table(name, self._tables[name])
        if self.root is None:
            raise CheckpointError(name, "no such model in this explorer")
        return self.open_path(resolve_checkpoint(self.root, name), name, progress)

    def open_path(self, path: Path, name: str | None = None, progress: Progress | None = None) -> ModelEntry:
        """Load a checkpoint file (from the folder, or an upload) and encode its evaluation images;
        cached by content hash."""
        path = Path(path)
        try:
            digest = file_digest(path)
        except OSError as exc:
            raise CheckpointError(path, f"cannot read the file: {exc}") from None
        with self._loading.hold(digest):  # a second caller for the same file waits and then finds the entry
            with self._lock:
                if digest in self._entries:
                    self._entries.move_to_end(digest)
                    return self._entries[digest]
            entry = self._build_file(path, digest, name or path.name, progress)
            with self._lock:
                self._entries[digest] = entry
                self._known[digest] = (path, entry.name)
                self._known.move_to_end(digest)
                while len(self._entries) > self.max_models:
                    self._entries.popitem(last=False)
                while len(self._known) > MAX_MODELS_KNOWN:
                    self._known.popitem(last=False)
            return entry

    def _open_memory(self, source: _MemorySource, progress: Progress | None) -> ModelEntry:
        key = f"memory:{source.name}"
        with self._loading.hold(key):
            with self._lock:
                if key in self._pinned:
                    return self._pinned[key]
            data, note = source.data, "" if source.data is not None else "no evaluation images were given with this model"
            if data is None and source.meta is not None:  # a loaded checkpoint: its own dataset
                try:
                    data, note = self._eval_images(source.meta), ""
                except NoEvalData as why:
                    note = str(why)
            data = data.subset(self.max_points) if data is not None else None
            entry = self._entry(key, source.name, source.model, source.meta, data, note, progress)
            with self._lock:
                self._pinned[key] = entry
            return entry

    def _open_table(self, name: str, table: EmbeddingTable) -> ModelEntry:
        """Precomputed codes: the latents are the table itself, not copied (a seeded subset above
        max_embedding_points, 2,000,000 by default: every row an embeddings file is read for)."""
        key = f"embeddings:{name}"
        with self._loading.hold(key):
            with self._lock:
                if key in self._pinned:
                    return self._pinned[key]
            model = EmbeddingsModel(table, name)
            n, d = table.latents.shape
            codes, labels, images, origin = table.latents, table.labels, table.images, table.origin
            if n > self.max_embedding_points:  # the same seeded subset as evaluation images get
                index = np.sort(np.random.default_rng(0).choice(n, self.max_embedding_points, replace=False))
                codes, labels, images = codes[index], labels[index], None if images is None else images[index]
                origin = f"{table.origin} (a seeded subset (seed 0) of {self.max_embedding_points:,} of them)"
            zeros = np.zeros(len(codes), np.float32)
            # codes have no spread: np.zeros maps its pages lazily, so the zeros cost no memory until read
            latents = LatentsCache(codes, np.zeros((len(codes), d), np.float32), labels,
                                   zeros, zeros, np.zeros(d, np.float32), None, images)
            entry = ModelEntry(key, name, model, model.describe(), latents, "", origin, None,
                               dataset_background(latents.images) if latents.images is not None else None)
            with self._lock:
                self._pinned[key] = entry
            return entry

    def _build_file(self, path: Path, digest: str, name: str, progress: Progress | None) -> ModelEntry:
        if progress:
            progress(0.0, f"loading {name}")
        if is_bundle(path):  # an ONNX bundle: graphs run by onnxruntime, never Python
            model, meta, bundled = load_bundle(path)
            sample: Callable[[], EmbeddedSample | None] = lambda: None if bundled is None else (*bundled, None)  # noqa: E731
        else:
            model, meta = load_checkpoint(path, self.device)  # validates; CheckpointError names the file
            sample = lambda: read_sample(path)  # noqa: E731  # read only when the dataset is not here
        try:
            data, note = self._eval_images(meta, sample).subset(self.max_points), ""
        except NoEvalData as why:
            data, note = None, str(why)
        try:
            entry = self._entry(digest, name, model, meta, data, note, progress)
        except InputError as exc:  # e.g. weights that give NaN: name the file
            raise CheckpointError(path, str(exc)) from None
        entry.path = path
        return entry

    @staticmethod
    def _entry(key: str, name: str, model: ExplorableModel, meta: CheckpointMeta | None, data: EvalData | None,
               note: str, progress: Progress | None) -> ModelEntry:
        description = check_contract(model)
        latents = None
        if data is not None:
            latents = encode_dataset(model, data.images, data.labels, progress=progress)
            latents.factors, latents.factor_names = data.factors, data.factor_names
        return ModelEntry(key, name, model, description, latents, note, data.origin if data else "", meta,
                          dataset_background(latents.images) if latents is not None else None)

    def _eval_images(self, meta: Any, sample: Callable[[], EmbeddedSample | None] = lambda: None) -> EvalData:
        """The model's dataset, resolved among the datasets this server knows (a file's dataset
        block is a hint from outside: see ``evaldata.resolve_eval_data``); else the sample the file
        carries (``sample()`` reads it, checked); else NoEvalData saying why there are none."""
        try:
            return resolve_eval_data(meta.dataset, meta.train_config, self.data_dir,
                                     folders_allowed=self.data_dir is not None)
        except NoEvalData as why:
            found = str(why)
            embedded = sample()
            if embedded is None:
                raise
        images, labels, factors = embedded
        names = tuple(meta.dataset.get("factor_names") or ()) if factors is not None else ()
        return EvalData(images, labels, f"the {len(images):,} images embedded in the file ({found})",
                        factors if names else None, names if names else ())


def default_cache_dir() -> Path:
    """Where projections are cached on disk: $XDG_CACHE_HOME/vaescope/projections."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "vaescope" / "projections"
