"""vaescope: train variational autoencoders and look inside them, and inside any autoencoder.

The public API is small::

    import vaescope as vs
    model = vs.load("assets/checkpoints/digits/vae.safetensors")   # a model, with .meta
    vs.save(model, "digits-vae.safetensors", images=x, labels=y)   # a checkpoint carrying its data
    app = vs.explore(model)                                        # the explorer on it
    app = vs.explore(my_vae, images=x_test, labels=y_test)         # on your own PyTorch model
    app.close()

The installed package is ``vaescope``; the repository's ``training/`` and ``explorer/`` folders are
installed beneath it as ``vaescope.training`` and ``vaescope.explorer``. The model contract is
``vaescope.contract``; foreign models reach it through ``vaescope.adapter``.
"""

from __future__ import annotations

import os
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


def save(model: Any, path: str | os.PathLike, images: Any = None, labels: Any = None) -> Path:
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
    20,000 and 64 MiB as uint8 (a seeded subset above that). ``labels``: ints [N], -1 where unknown
    (a ``Dataset`` of (image, label) pairs brings its own). Without ``images`` the checkpoint has no
    sample. For a foreign model use ``vs.export``. Read the sample back with
    ``vaescope.training.checkpoint.read_sample(path)``.

    Examples:
        >>> import vaescope as vs
        >>> from vaescope.training.data import load_dataset
        >>> model = vs.load("assets/checkpoints/digits/vae.safetensors", device="cpu")  # doctest: +SKIP
        >>> test = load_dataset("digits").test
        >>> vs.save(model, "digits-vae.safetensors", images=test.images, labels=test.labels)  # doctest: +SKIP
        PosixPath('digits-vae.safetensors')
    """
    import numpy as np

    from vaescope.adapter import images_as_tensor
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
        x, y = images_as_tensor(images)
        if labels is not None:
            y = np.asarray(labels).astype(np.int64).ravel()
            if len(y) != len(x):
                raise InputError(f"labels must give one label per image: {len(y)} labels for {len(x)} images")
        per_image = max(1, int(np.prod(x.shape[1:])))
        limit = min(MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES // per_image)
        if len(x) > limit:  # a seeded subset, the same rows of images and labels
            keep = np.sort(np.random.default_rng(0).choice(len(x), limit, replace=False))
            x, y = x[keep], None if y is None else np.asarray(y)[keep]
        pixels = (x.numpy() * 255 + 0.5).astype(np.uint8)
        try:
            extra = sample_tensors(pixels, None if y is None else np.asarray(y), image_shape=config.image_shape,
                                   num_classes=len(meta.dataset.get("class_names", ())))
        except ConfigError as exc:
            raise InputError(f"vs.save: {exc}") from None
    return save_checkpoint(path, model, meta, extra=extra)


def export(model: Any, path: str | os.PathLike, images: Any = None, labels: Any = None,
           class_names: Sequence[str] | None = None, **adapter_options: Any) -> Path:
    """Write ``model`` as an ONNX bundle at ``path`` (a ``.safetensors`` file): its encoder, decoder,
    prior and KL as ONNX graphs, its description and metadata, and ``images`` (with ``labels``) as
    an embedded evaluation sample (at most 20,000). The explorer and ``vs.load`` open it with
    onnxruntime; nothing in it can run Python.

    ``model`` is a vaescope model (``vs.load``), a checkpoint path, or any object with ``encode``
    and ``decode`` (read through ``vaescope.adapter.adapt`` with ``adapter_options``). Every graph
    must reproduce PyTorch's outputs within 1e-4 on the sample (or on noise without one), or
    nothing is written.
    """
    import numpy as np

    from vaescope.adapter import adapt, images_as_tensor
    from vaescope.bundle import export_bundle
    from vaescope.limits import MAX_SAMPLE_IMAGES
    from vaescope.training.models import LatentModel

    if isinstance(model, str | os.PathLike):
        model = load(model, device="cpu")
    x, y = (None, None) if images is None else images_as_tensor(images, limit=MAX_SAMPLE_IMAGES)
    if labels is not None:
        y = np.asarray(labels).astype(np.int64).ravel()
    meta = getattr(model, "meta", None)
    if isinstance(model, LatentModel):
        if class_names is not None:
            model.class_names = tuple(str(c) for c in class_names)
        contract_model = model
    else:
        contract_model = adapt(model, x, class_names=tuple(class_names or ()), **adapter_options)
    sample = None if x is None else (x.numpy() * 255 + 0.5).astype(np.uint8)
    return export_bundle(contract_model, Path(path), sample, None if y is None else np.asarray(y), meta)


def explore(x: Any = None, images: Any = None, labels: Any = None, class_names: Sequence[str] | None = None, *,
            latents: Any = None, name: str | None = None, device: str = "auto",
            image_shape: tuple[int, ...] | None = None,
            input_shape: str = "auto", input_range: str = "auto", output: str = "auto", prior: str = "auto",
            encode_output: Callable[[Any], Any] | None = None, decode_output: Callable[[Any], Any] | None = None,
            **launch_options: Any) -> Any:
    """Open the explorer on ``x`` and return the running app (``app.close()`` stops it).

    ``x`` is a model object (a vaescope model, or any object with ``encode`` and ``decode``, read
    through ``vaescope.adapter.adapt`` with the keywords ``image_shape``, ``input_shape``,
    ``input_range``, ``output``, ``prior``, ``encode_output``, ``decode_output``), a checkpoint
    path, a folder of checkpoints, or an embeddings file (.npz / .parquet). ``images`` (numpy
    array, torch tensor or torch ``Dataset``; uint8 or float in [0, 1]) are the evaluation images
    the map shows, with optional ``labels`` and free-form ``class_names``. Without a model,
    ``latents=Z`` [N, D] maps precomputed codes from any encoder (with optional images as
    thumbnails); the decoding panels then say there is no decoder.

    ``launch_options`` are Gradio's own ``launch()`` keywords (``server_name``, ``server_port``,
    ``prevent_thread_lock``, ``inbrowser``, ``share``, ...). The server binds 127.0.0.1 unless
    told otherwise. From a script it opens a browser tab and blocks until Ctrl-C (pass
    ``prevent_thread_lock=True`` to serve in the background); in a notebook it shows inline.
    """
    from vaescope.devices import pick_device
    from vaescope.explorer.ui.app import build_app, prepare_process

    store, default = _store_for(x, images, labels, class_names, latents=latents, name=name,
                                device=pick_device(device),
                                adapter_options={"image_shape": image_shape, "input_shape": input_shape,
                                                 "input_range": input_range, "output": output, "prior": prior,
                                                 "encode_output": encode_output, "decode_output": decode_output})
    app = build_app(store=store, default_checkpoint=default)
    prepare_process(int(launch_options.pop("torch_threads", 1)))
    launch_options.setdefault("server_name", "127.0.0.1")
    if "inbrowser" not in launch_options and not _in_notebook():
        launch_options["inbrowser"] = True
    app.launch(**launch_options)
    return app


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _store_for(x: Any, images: Any, labels: Any, class_names: Sequence[str] | None, *, latents: Any,
               name: str | None, device: Any, adapter_options: dict[str, Any]) -> tuple[Any, str | None]:
    """A model store holding what ``explore`` was given, and the name to open first."""
    from vaescope.errors import InputError
    from vaescope.explorer.core.embeddings import read_embeddings, table_from_arrays
    from vaescope.explorer.core.store import ModelStore

    if latents is not None:
        if x is not None:
            raise InputError("give a model or latents=, not both")
        store, label = ModelStore(None, device), name or "embeddings"
        images_array = None
        if images is not None:
            from vaescope.adapter import images_as_tensor
            from vaescope.limits import MAX_EMBEDDING_POINTS

            images_array = images_as_tensor(images, limit=MAX_EMBEDDING_POINTS)[0].numpy()
        store.add_embeddings(label, table_from_arrays(latents, images_array, labels, class_names,
                                                      "the codes given to vs.explore"))
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
        store = ModelStore(None, device)
        store.add_file(path, name or path.name)
        return store, name or path.name
    if x is None:
        raise InputError("vs.explore needs a model, a checkpoint path or a folder of checkpoints")
    model, data = _as_model(x, images, labels, class_names, device=device, name=name, options=adapter_options)
    label = name or getattr(model, "name", None) or type(x).__name__
    store = ModelStore(None, device)
    store.add_model(label, model, data, getattr(x, "meta", None))
    return store, label


def _as_model(x: Any, images: Any, labels: Any, class_names: Sequence[str] | None, *, device: Any,
              name: str | None, options: dict[str, Any]) -> tuple[Any, Any]:
    """(a model answering the contract, its EvalData or None) for a model object."""
    import numpy as np
    import torch

    from vaescope.adapter import adapt, images_as_tensor
    from vaescope.errors import InputError
    from vaescope.explorer.core.evaldata import EvalData
    from vaescope.limits import MAX_MAP_POINTS
    from vaescope.training.models import LatentModel

    x_images = None
    y = None
    if images is not None:
        x_images, y = images_as_tensor(images, limit=MAX_MAP_POINTS)
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels)).long().flatten()
        if x_images is None or len(y) != len(x_images):
            raise InputError(f"labels must give one label per image: {len(y)} labels for "
                             f"{0 if x_images is None else len(x_images)} images")
    names = tuple(str(c) for c in class_names) if class_names is not None else None
    if isinstance(x, LatentModel):
        model = x.to(device).eval()
        if names is not None:
            model.class_names = names
    else:
        if isinstance(x, torch.nn.Module):
            x = x.to(device)
        if names is None and y is not None and len(y):
            names = tuple(str(i) for i in range(int(y.max()) + 1))
        model = adapt(x, None if x_images is None else x_images.to(torch.float32), name=name,
                      class_names=names or (), **options)
    if names is not None and y is not None and len(y) and int(y.max()) >= len(names):
        raise InputError(f"labels go up to {int(y.max())} but there are {len(names)} class names")
    if x_images is not None and tuple(x_images.shape[1:]) != model.describe().image_shape:
        raise InputError(f"the images are {list(x_images.shape[1:])} but the model takes "
                         f"{list(model.describe().image_shape)}")
    data = None
    if x_images is not None:
        labels_np = np.full(len(x_images), -1, np.int64) if y is None else y.numpy()
        data = EvalData((x_images.numpy() * 255 + 0.5).astype(np.uint8), labels_np,
                        f"the {len(x_images):,} images given to vs.explore")
    return model, data
