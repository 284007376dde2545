"""vaescope: train variational autoencoders and look inside them, and inside any autoencoder.

The public API is small::

    import vaescope as vs
    model = vs.load("assets/checkpoints/digits/vae.safetensors")   # a model, with .meta
    vs.save(model, "digits-vae.safetensors", images=x, labels=y)   # a checkpoint carrying its data
    app = vs.explore(model)                                        # the explorer on it
    app = vs.explore(my_vae, images=x_test, labels=y_test)         # on your own PyTorch model
    app = vs.explore(my_tab_vae, features=X, feature_names=names)  # on a model of a table's rows
    app.close()

The installed package is ``vaescope``; the repository's ``training/`` and ``explorer/`` folders are
installed beneath it as ``vaescope.training`` and ``vaescope.explorer``. The model contract is
``vaescope.contract``; foreign models reach it through ``vaescope.adapter``.
"""

from __future__ import annotations

import html
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__version__ = "0.2.0"
__all__ = ["load", "save", "explore", "export", "__version__"]


def load(path: str | os.PathLike, device: str = "auto") -> Any:
    """A vaescope checkpoint as a model (a ``torch.nn.Module`` answering the contract), in eval
    mode on ``device`` (auto: CUDA, then MPS, then CPU), with its metadata as ``model.meta``
    (history, metrics, dataset block, configs). Raises ``CheckpointError`` naming the file.

    Examples:
        >>> import vaescope as vs
        >>> model = vs.load("assets/checkpoints/digits/vae.safetensors", device="cpu")  # doctest: +SKIP
        >>> model.describe().latent_dim, model.meta.dataset["name"]  # doctest: +SKIP
        (8, 'digits')
    """
    from vaescope.bundle import is_bundle, load_bundle
    from vaescope.devices import pick_device
    from vaescope.training.checkpoint import load_checkpoint

    if is_bundle(path):  # an ONNX bundle (vs.export): onnxruntime on the CPU, whatever the device
        model, meta, _ = load_bundle(Path(path))
        return model
    model, meta = load_checkpoint(Path(path), pick_device(device))
    model.meta = meta
    return model


def save(model: Any, path: str | os.PathLike, images: Any = None, labels: Any = None, *, maps: bool = False) -> Path:
    """Write a vaescope model as a checkpoint at ``path`` (a ``.safetensors`` file), with ``images``
    and ``labels`` embedded as its evaluation sample, so the explorer can draw its map where the
    dataset is not on the machine. Returns the path.

    ``model`` is one of vaescope's own models: from ``vs.load``, or the ``model`` of
    ``vaescope.training.train.train`` (``latent-train``'s). Its metadata (configs, dataset block,
    history, metrics) comes from ``model.meta`` when it has one; else it is made from the model's
    config, with the dataset named "unknown". The weights are written in float32, atomically (a
    failed write keeps any earlier file). A training record the model's file carried is not kept.

    ``images``: a numpy array, torch tensor or torch ``Dataset``, uint8 or float in [0, 1], shaped
    ``[N, C, H, W]``, ``[N, H, W]``, ``[N, H, W, C]`` or flat, of the model's image shape; at most
    20,000 and 64 MiB as uint8 (above that, a seeded subset of the images and the same rows of the
    labels, said in a warning). ``labels``: ints [N], -1 where unknown, or strings (class names, in
    the order of the model's class names; a ``Dataset`` of (image, label) pairs brings its own). Without ``images`` the checkpoint has no
    sample. For a foreign model use ``vs.export``. Read the sample back with
    ``vaescope.training.checkpoint.read_sample(path)``.

    ``maps``: also fit the sample's 2-D t-SNE and UMAP maps (PCA takes no time) and write them in the maps
    sidecar beside the file (``NAME.maps.npz``, keyed by the sample's digest, as ``latent-maps``
    does), so the explorer opens the map at once; a minute or so for a few thousand images.

    Examples:
        >>> import vaescope as vs
        >>> from vaescope.training.data import load_dataset
        >>> model = vs.load("assets/checkpoints/digits/vae.safetensors", device="cpu")  # doctest: +SKIP
        >>> test = load_dataset("digits").test
        >>> vs.save(model, "digits-vae.safetensors", images=test.images, labels=test.labels)  # doctest: +SKIP
        PosixPath('digits-vae.safetensors')
    """
    import numpy as np

    from vaescope.adapter import given_images, values_per_image
    from vaescope.errors import InputError
    from vaescope.limits import MAX_SAMPLE_BYTES, MAX_SAMPLE_IMAGES
    from vaescope.training.checkpoint import CheckpointMeta, save_checkpoint
    from vaescope.training.checks import ConfigError
    from vaescope.training.config import TrainConfig
    from vaescope.training.embedded import sample_tensors
    from vaescope.training.models import LatentModel

    if not isinstance(model, LatentModel):
        raise InputError(f"vs.save writes vaescope's own models (vs.load, latent-train), not a {type(model).__name__}; "
                         "write any other model with vs.export")
    config = model.config
    meta = getattr(model, "meta", None)
    if not isinstance(meta, CheckpointMeta):
        block: dict[str, Any] = {"name": "unknown", "image_shape": list(config.image_shape), "display": config.display}
        if model.class_names:
            block["class_names"] = list(model.class_names)
        meta = CheckpointMeta(model_config=config, train_config=TrainConfig(dataset="unknown").to_dict(), dataset=block)
    extra = {}
    if images is not None:
        names = meta.dataset.get("class_names") or model.class_names or None
        given = given_images(images, labels, names, limit=min(MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES // values_per_image(images)))
        if given.subset:
            _say(f"vs.save: the checkpoint carries {given.origin('vs.save')} (a sample holds at most "
                 f"{MAX_SAMPLE_IMAGES:,} images and {MAX_SAMPLE_BYTES >> 20} MiB)")
        pixels = (given.images.numpy() * 255 + 0.5).astype(np.uint8)
        try:
            extra = sample_tensors(pixels, None if given.labels is None else given.labels.numpy(),
                                   image_shape=config.image_shape, num_classes=len(meta.dataset.get("class_names", ())))
        except ConfigError as exc:
            raise InputError(f"vs.save: {exc}") from None
    if maps and images is None:
        raise InputError("vs.save(maps=True) maps the images it embeds: give images= as well")
    written = save_checkpoint(path, model, meta, extra=extra)
    if maps:
        from vaescope.explorer.core.mapfiles import write_sidecar

        write_sidecar(written, sample=True, say=lambda _: None)
    return written


def export(model: Any, path: str | os.PathLike, images: Any = None, labels: Any = None,
           class_names: Sequence[str] | None = None, *, features: Any = None,
           feature_names: Sequence[str] | None = None, **adapter_options: Any) -> Path:
    """Write ``model`` as an ONNX bundle at ``path`` (a ``.safetensors`` file): its encoder, decoder,
    prior and KL as ONNX graphs, its description and metadata, and ``images`` (with ``labels``) as
    an embedded evaluation sample (at most 20,000 images and 64 MiB: above that, a seeded subset
    of the images and the same rows of the labels, said in a warning). The explorer and
    ``vs.load`` open it with onnxruntime; nothing in it can run Python.

    ``model`` is a vaescope model (``vs.load``), a checkpoint path, or any object with ``encode``
    and ``decode`` (read through ``vaescope.adapter.adapt`` with ``adapter_options``: the keywords
    of ``vs.explore``, ``condition="class"`` and ``classes=K`` included). Every graph must
    reproduce PyTorch's outputs within 1e-4 on the sample (or on noise without one), or nothing is
    written. ``labels`` are integers or strings (class names). A model of a table's rows takes
    ``features=X`` [N, F] (with ``feature_names``) in place of ``images``, as ``vs.explore`` does;
    its bundle draws rows as bar charts by name (at most 256 features). A module is put back in the
    train / eval mode and on the device it had before the call.

    Examples:
        >>> import vaescope as vs
        >>> vs.export(my_vae, "my-vae.safetensors", images=x_test, labels=y_test)  # doctest: +SKIP
        PosixPath('my-vae.safetensors')
    """
    import numpy as np

    from vaescope.adapter import adapt, given_features, given_images, values_per_image
    from vaescope.bundle import export_bundle
    from vaescope.errors import InputError
    from vaescope.limits import MAX_IMAGE_SIDE, MAX_SAMPLE_BYTES, MAX_SAMPLE_IMAGES
    from vaescope.training.models import LatentModel

    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        raise InputError(f"vs.export writes one .safetensors file (the explorer lists those, and onnx.load cannot "
                         f"read a bundle): name it {target.with_suffix('.safetensors').name!r}, not {target.name!r}")
    _check_features(model, images, features, feature_names, where="vs.export")
    if isinstance(model, str | os.PathLike):
        model = load(model, device="cpu")
    state = _ModuleState(model)
    try:
        given, scale = None, None
        if features is not None:
            shape = tuple(getattr(features, "shape", ()))
            width = int(shape[1]) if len(shape) == 2 else 0  # given_features refuses any other shape
            if width > MAX_IMAGE_SIDE:
                raise InputError(f"a bundle holds rows of at most {MAX_IMAGE_SIDE} features, got {width}; explore a "
                                 "wider table with vs.explore(model, features=X)")
            limit = min(MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES // max(1, width))
            given, scale = given_features(features, labels, class_names, feature_names, limit=limit)
            if given.subset:
                _say(f"vs.export: the bundle carries {given.origin('vs.export', 'rows')} as its sample (a bundle's "
                     f"sample holds at most {MAX_SAMPLE_IMAGES:,} rows)")
        elif images is not None:
            limit = min(MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES // values_per_image(images))
            given = given_images(images, labels, class_names, limit=limit)
            if given.subset:
                _say(f"vs.export: the bundle carries {given.origin('vs.export')} as its sample (a bundle's sample "
                     f"holds at most {MAX_SAMPLE_IMAGES:,} images and {MAX_SAMPLE_BYTES >> 20} MiB)")
        elif labels is not None:
            raise InputError("labels go with images: pass images=... as well")
        names = class_names if class_names is not None else (given.class_names if given is not None else None)
        y = None if given is None or given.labels is None else given.labels
        meta = getattr(model, "meta", None)
        if isinstance(model, LatentModel):
            if names is not None:
                model.class_names = tuple(str(c) for c in names)
            contract_model = model
        else:
            contract_model = adapt(model, None if given is None else given.images, labels=y,
                                   class_names=tuple(names or ()), **adapter_options,
                                   **({} if scale is None else {"features": scale}))
        sample = None if given is None else (given.images.numpy() * 255 + 0.5).astype(np.uint8)
        return export_bundle(contract_model, target, sample, None if y is None else y.numpy(), meta)
    finally:
        state.restore()


EXPLORE_HEIGHT = 1000  # px of the explorer shown inside a notebook (inline=True): its map and panels need a page
_SERVED: dict[int, Any] = {}  # port -> the app vs.explore serves there, in this process (a re-run cell replaces it)
_LAUNCH_ALIASES = {"port": "server_port", "host": "server_name"}  # latent-explore's --port and --host


def explore(x: Any = None, images: Any = None, labels: Any = None, class_names: Sequence[str] | None = None, *,
            latents: Any = None, features: Any = None, feature_names: Sequence[str] | None = None,
            name: str | None = None, device: str = "auto",
            image_shape: tuple[int, ...] | None = None,
            input_shape: str = "auto", input_range: str = "auto", output: str = "auto", prior: str = "auto",
            spread: str = "auto", stochastic: bool = False,
            condition: str = "none", classes: int | None = None, condition_format: str = "auto",
            encode_output: Callable[[Any], Any] | None = None, decode_output: Callable[[Any], Any] | None = None,
            decode_input: Callable[[Any], Any] | None = None, inline: bool | None = None,
            **launch_options: Any) -> Any:
    """Open the explorer on ``x`` and return the running app (``app.close()`` stops it).

    ``x`` is a model object (a vaescope model, or any object with ``encode`` and ``decode``, read
    through ``vaescope.adapter.adapt`` with the keywords ``image_shape``, ``input_shape``,
    ``input_range``, ``output``, ``prior``, ``spread``, ``stochastic``, ``condition``,
    ``classes``, ``condition_format``, ``encode_output``, ``decode_output``, ``decode_input``:
    the adapter decides by evidence where it is clear and otherwise asks for the keyword that
    settles it), a checkpoint path (refused as ``vs.load`` refuses it, before anything is
    served), a folder of checkpoints, or an embeddings file (.npz / .parquet).

    ``images`` (numpy array, torch tensor or torch ``Dataset``; uint8 or float in [0, 1]) are the
    evaluation images the map shows, with optional ``labels`` (integers, or strings: class names,
    numbered in the order of ``class_names`` when given, else sorted) and ``class_names``. Above
    70,000 images the map encodes a seeded subset (seed 0) of the images and the same rows of the
    labels, and says so. Without a model, ``latents=Z`` [N, D] maps precomputed codes from any
    encoder (with optional images as thumbnails); the decoding panels then say there is no decoder.

    A model of a table's rows (a tabular VAE): ``features=X``, the rows [N, F] (numbers in any units,
    e.g. standardised; a numpy array, torch tensor or pandas DataFrame) in place of ``images``, with
    optional ``feature_names`` (one per column; a DataFrame's columns by default) and ``labels``.
    The model is given rows [B, F] in the units of X and its decoder read in the same units; every
    panel draws a row as a bar chart of the features by name, where it would draw a picture.

    A class-conditional model of your own: ``condition="class", classes=K`` with ``labels``; the
    adapter gives each image's class to encode and decode the way the model takes it (a second
    argument, as indices or one-hot, or joined to the input as AntixK's ConditionalVAE does), and
    class sampling decodes with the class chosen.

    ``launch_options`` are Gradio's own ``launch()`` keywords (``server_name``, ``server_port``,
    ``prevent_thread_lock``, ``inbrowser``, ``share``, ...; ``port=`` and ``host=`` are read as
    ``server_port=`` and ``server_name=``); an unknown keyword is refused in one sentence. The
    server binds 127.0.0.1 unless told otherwise. From a script it opens a browser tab and blocks
    until Ctrl-C (pass ``prevent_thread_lock=True`` to serve in the background). In a notebook it
    serves in the background and shows a link to open the explorer in its own tab (it needs a full
    page); ``inline=True`` shows it in the notebook instead, ``EXPLORE_HEIGHT`` px high. Calling
    it again with the ``server_port`` of an explorer it started earlier in this process (a re-run
    cell) closes that one first; a port held by anything else is refused in one sentence.

    Your module is put in eval mode (and on ``device``) while it is served; ``app.close()`` puts it
    back in the mode and on the device it had.

    Examples:
        >>> import vaescope as vs
        >>> app = vs.explore(my_vae, images=x_test, labels=y_test, prevent_thread_lock=True)  # doctest: +SKIP
        >>> app = vs.explore(my_cvae, images=x_test, labels=y_test, condition="class", classes=10)  # doctest: +SKIP
        >>> app.close()  # doctest: +SKIP
    """
    from vaescope.devices import pick_device

    launch_options = _launch_options(launch_options)
    torch_threads = int(launch_options.pop("torch_threads", 1))
    state = _ModuleState(x)
    try:
        store, default = _store_for(x, images, labels, class_names, latents=latents, name=name,
                                    device=pick_device(device), features=features, feature_names=feature_names,
                                    adapter_options={"image_shape": image_shape, "input_shape": input_shape,
                                                     "input_range": input_range, "output": output, "prior": prior,
                                                     "spread": spread, "stochastic": stochastic,
                                                     "condition": condition, "classes": classes,
                                                     "condition_format": condition_format,
                                                     "encode_output": encode_output,
                                                     "decode_output": decode_output, "decode_input": decode_input})
        from vaescope.explorer.ui.app import build_app, prepare_process

        app = build_app(store=store, default_checkpoint=default)
        prepare_process(torch_threads)
        notebook = _in_notebook()
        launch_options.setdefault("server_name", "127.0.0.1")
        if notebook:
            launch_options.setdefault("prevent_thread_lock", True)  # a cell must not block the kernel
            launch_options["inline"] = bool(inline)
            if inline:
                launch_options.setdefault("height", EXPLORE_HEIGHT)
        else:
            if inline is not None:
                launch_options["inline"] = inline
            if "inbrowser" not in launch_options:
                launch_options["inbrowser"] = True
        _launch(app, launch_options)
    except BaseException:
        state.restore()
        raise
    blocked = not launch_options.get("prevent_thread_lock") and not bool(getattr(sys, "ps1", sys.flags.interactive))
    if blocked:  # a script's call returns after Ctrl-C: nothing serves the model any more
        state.restore()
        return app
    _on_close(app, state)
    if notebook and not inline:
        _show_link(app.local_url)
    return app


def _launch_options(options: dict[str, Any]) -> dict[str, Any]:
    """Gradio's launch keywords, with ``port`` / ``host`` read as ``server_port`` / ``server_name``;
    an unknown keyword (a slip, or a misspelt adapter keyword) is refused in one sentence."""
    import difflib
    import inspect

    from gradio import Blocks

    from vaescope.errors import InputError

    options = dict(options)
    for alias, real in _LAUNCH_ALIASES.items():
        if alias in options:
            if real in options:
                raise InputError(f"pass {real}= or {alias}=, not both")
            options[real] = options.pop(alias)
    allowed = {p for p in inspect.signature(Blocks.launch).parameters if p != "self" and not p.startswith("_")}
    allowed |= {"torch_threads"}
    own = [p for p in inspect.signature(explore).parameters if p != "launch_options"]
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, [*own, *allowed, *_LAUNCH_ALIASES], n=1, cutoff=0.6)
            raise InputError(f"vs.explore got an unknown keyword {key}=" + (f" (did you mean {close[0]}=?)" if close else "")
                             + "; it takes the adapter's keywords (input_range=, output=, spread=, condition=, ...) and "
                             "Gradio's launch() keywords (server_port=, server_name=, share=, prevent_thread_lock=, ...)")
    port = options.get("server_port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise InputError(f"server_port must be a whole number in 1..65535 (or None for the first free one from "
                         f"7860), got {port!r}")
    return options


def _launch(app: Any, options: dict[str, Any]) -> None:
    """``app.launch(**options)``; an explorer this process serves on the port asked for is closed
    first (a re-run notebook cell), and a port held by anything else is refused in one sentence."""
    from vaescope.errors import InputError

    port = options.get("server_port")
    earlier = _SERVED.get(port) if port is not None else None
    if earlier is not None and getattr(earlier, "is_running", False):
        earlier.close(verbose=False)
        _say(f"vaescope: closed the explorer this process started earlier on port {port}, to serve this one there")
    try:
        app.launch(**options)
    except OSError as exc:
        if "Cannot find empty port" not in str(exc):
            raise InputError(f"the explorer cannot be served: {str(exc).splitlines()[0][:200]}") from None
        if port is None:
            raise InputError("no port is free from 7860 to 7959: pass server_port=... (a free port), or close earlier "
                             "explorers with app.close()") from None
        raise InputError(f"port {port} is in use: pass server_port=... (another port, or None for the first free "
                         "one), or close the earlier app with app.close()") from None


def _on_close(app: Any, state: _ModuleState) -> None:
    """Remember the app by its port, and make ``app.close()`` put the user's module back as it was."""
    port = getattr(app, "server_port", None)
    if port is not None:
        _SERVED[port] = app
    close = app.close

    def close_and_restore(verbose: bool = True) -> None:
        try:
            close(verbose)
        finally:
            state.restore()
            if port is not None and _SERVED.get(port) is app:
                del _SERVED[port]

    app.close = close_and_restore


def _show_link(url: str) -> None:
    """In a notebook: a link to the explorer, which needs a page of its own."""
    text = (f"The vaescope explorer is running at {url} : open it in a new tab (it needs a full page). "
            "Pass inline=True to show it in the notebook; app.close() stops it.")
    try:
        from IPython.display import HTML, display
    except ImportError:
        print(text)
        return
    link = html.escape(url, quote=True)
    display(HTML(f'<p>The vaescope explorer is running at <a href="{link}" target="_blank" rel="noopener">{link}</a>: '
                 "open it in a new tab (it needs a full page). Pass <code>inline=True</code> to show it in the "
                 "notebook; <code>app.close()</code> stops it.</p>"))


def _say(message: str) -> None:
    """A note for the user that is not an error (a subset taken, an earlier app closed)."""
    import warnings

    warnings.warn(message, UserWarning, stacklevel=3)


class _ModuleState:
    """The train / eval flag of every submodule of a user's torch module, and its device, to put
    back after vaescope used it (vs.export at once; vs.explore when its app closes)."""

    def __init__(self, obj: Any) -> None:
        import torch

        self.module = obj if isinstance(obj, torch.nn.Module) else None
        self.flags = [] if self.module is None else [(m, m.training) for m in self.module.modules()]
        self.device = self._device()
        self.done = False

    def _device(self) -> Any:
        if self.module is None:
            return None
        first = next(self.module.parameters(), None)
        if first is None:
            first = next(self.module.buffers(), None)
        return None if first is None else first.device

    def restore(self) -> None:
        if self.module is None or self.done:
            return
        self.done = True
        if self.device is not None and self._device() != self.device:
            self.module.to(self.device)
        for m, training in self.flags:
            m.training = training


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _store_for(x: Any, images: Any, labels: Any, class_names: Sequence[str] | None, *, latents: Any,
               name: str | None, device: Any, adapter_options: dict[str, Any], features: Any = None,
               feature_names: Sequence[str] | None = None) -> tuple[Any, str | None]:
    """A model store holding what ``explore`` was given, and the name to open first."""
    from vaescope.errors import InputError
    from vaescope.explorer.core.embeddings import read_embeddings
    from vaescope.explorer.core.store import ModelStore

    _check_features(x, images, features, feature_names, latents=latents, where="vs.explore")
    if latents is not None:
        if x is not None:
            raise InputError("give a model or latents=, not both")
        store, label = ModelStore(None, device), name or "embeddings"
        store.add_embeddings(label, _codes_table(latents, images, labels, class_names))
        return store, label
    if isinstance(x, str | os.PathLike):
        path = Path(x).expanduser()
        if images is not None or labels is not None:
            raise InputError("images and labels go with a model object; a checkpoint brings its own data")
        if path.is_dir():
            return ModelStore(path, device), None
        if path.suffix.lower() in (".npz", ".parquet"):
            store = ModelStore(None, device)
            store.add_embeddings(name or path.name, read_embeddings(path))
            return store, name or path.name
        load(path, device="cpu")  # refused here as vs.load refuses it, before anything is served
        store = ModelStore(None, device)
        store.add_file(path, name or path.name)
        return store, name or path.name
    if x is None:
        raise InputError("vs.explore needs a model, a checkpoint path or a folder of checkpoints")
    model, data = _as_model(x, images, labels, class_names, device=device, name=name, options=adapter_options,
                            features=features, feature_names=feature_names)
    label = name or getattr(model, "name", None) or type(x).__name__
    store = ModelStore(None, device)
    store.add_model(label, model, data, getattr(x, "meta", None))
    return store, label


def _codes_table(latents: Any, images: Any, labels: Any, class_names: Sequence[str] | None) -> Any:
    """An EmbeddingTable of codes given to vs.explore: above MAX_EMBEDDING_POINTS, a seeded subset
    of the codes with the same rows of the images and labels."""
    import numpy as np
    import torch

    from vaescope.adapter import given_images, labels_as_classes, subset_rows
    from vaescope.errors import InputError
    from vaescope.explorer.core.embeddings import table_from_arrays
    from vaescope.limits import MAX_EMBEDDING_POINTS

    z = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
    if z.ndim != 2:
        raise InputError(f"latents must be [N, D], got {list(z.shape)}")
    n = len(z)
    rows = subset_rows(n, MAX_EMBEDDING_POINTS)
    origin = ("the codes given to vs.explore" if rows is None else
              f"a seeded subset (seed 0) of {MAX_EMBEDDING_POINTS:,} of the {n:,} codes given to vs.explore")
    pixels, y, names = None, None, class_names
    if images is not None:
        given = given_images(images, labels, class_names, limit=MAX_EMBEDDING_POINTS)
        if given.total != n:
            raise InputError(f"images must give one image per code: {given.total:,} images for {n:,} codes")
        pixels = (given.images.numpy() * 255 + 0.5).astype(np.uint8)
        y, names = (None if given.labels is None else given.labels.numpy()), given.class_names
    elif labels is not None:
        y, names = labels_as_classes(labels, n, class_names)
        y = y if rows is None else y[rows]
    return table_from_arrays(z if rows is None else z[rows], pixels, y, names, origin)


def _check_features(x: Any, images: Any, features: Any, feature_names: Any, *, latents: Any = None,
                    where: str) -> None:
    """Refuse, in one sentence, ``features=`` / ``feature_names=`` given with what they cannot go with."""
    from vaescope.errors import InputError
    from vaescope.training.models import LatentModel

    if features is None:
        if feature_names is not None:
            raise InputError("feature_names= go with features=: pass the table's rows as features=X [N, F]")
        return
    if images is not None:
        raise InputError("give images= or features=, not both: features= are a table's rows [N, F], images= pictures")
    if latents is not None:
        raise InputError("features= go with a model that encodes them; precomputed codes go alone as latents=")
    if isinstance(x, str | os.PathLike):
        raise InputError(f"features= go with a model object (your PyTorch module); a file given to {where} brings "
                         "its own data")
    if isinstance(x, LatentModel):
        raise InputError("vaescope's own models read images; features= are for your own model of a table's rows")


def _as_model(x: Any, images: Any, labels: Any, class_names: Sequence[str] | None, *, device: Any,
              name: str | None, options: dict[str, Any], features: Any = None,
              feature_names: Sequence[str] | None = None) -> tuple[Any, Any]:
    """(a model answering the contract, its EvalData or None) for a model object (a tabular model
    with ``features``: its rows as [N, 1, 1, F] "images" in [0, 1])."""
    import numpy as np
    import torch

    from vaescope.adapter import adapt, given_features, given_images
    from vaescope.errors import InputError
    from vaescope.explorer.core.evaldata import EvalData
    from vaescope.limits import MAX_MAP_POINTS
    from vaescope.training.models import LatentModel

    own = isinstance(x, LatentModel)
    known = class_names if class_names is not None else (tuple(x.class_names) or None if own else None)
    given, scale = None, None
    if features is not None:
        given, scale = given_features(features, labels, known, feature_names, limit=MAX_MAP_POINTS)
    elif images is not None:
        given = given_images(images, labels, known, limit=MAX_MAP_POINTS)
    elif labels is not None:
        raise InputError("labels go with images: pass images=... as well")
    names = given.class_names if given is not None and given.class_names is not None else (
        None if class_names is None else tuple(str(c) for c in class_names))
    y = None if given is None else given.labels
    if own:
        model = x.to(device).eval()
        if names is not None:
            model.class_names = names
    else:
        if isinstance(x, torch.nn.Module):
            x = x.to(device)
        classes = options.get("classes")
        if names is None and (y is not None and len(y) or classes):
            count = max(int(y.max()) + 1 if y is not None and len(y) else 0, classes or 0)
            names = tuple(str(i) for i in range(count))
        model = adapt(x, None if given is None else given.images, labels=y, name=name,
                      class_names=names or (), **options, **({} if scale is None else {"features": scale}))
    if names is not None and y is not None and len(y) and int(y.max()) >= len(names):
        raise InputError(f"labels go up to {int(y.max())} but there are {len(names)} class names")
    if given is not None and tuple(given.images.shape[1:]) != model.describe().image_shape:
        raise InputError(f"the images are {list(given.images.shape[1:])} but the model takes "
                         f"{list(model.describe().image_shape)}")
    data = None
    if given is not None:
        labels_np = np.full(len(given.images), -1, np.int64) if y is None else y.numpy()
        data = EvalData((given.images.numpy() * 255 + 0.5).astype(np.uint8), labels_np,
                        given.origin("vs.explore", "images" if scale is None else "rows of features"))
    return model, data
