"""Models vaescope did not define, explored through the one adapter: the PyTorch examples' VAE, pythae,
diffusers and AntixK styles and a logit autoencoder (all written in ``foreign_models.py``), each
encoded, decoded, mapped and class-sampled through the explorer's own code path; what the adapter
refuses, and how it says so; and ``vs.load`` / ``vs.explore``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign_models import EXPECTED, STYLES, DiagonalGaussian, digits, trained
from gradio_client import Client
from PIL import Image
from torch import nn

import vaescope as vs
from vaescope.adapter import AdapterError, adapt, images_as_tensor, to_unit
from vaescope.contract import Condition, Description, Posterior, check_contract
from vaescope.errors import InputError
from vaescope.explorer.core.evaldata import EvalData
from vaescope.explorer.core.maps import MapView, map_figure
from vaescope.explorer.core.projection import fit_projection
from vaescope.explorer.core.sampling import sample_class
from vaescope.explorer.core.store import ModelStore
from vaescope.training.config import ModelConfig
from vaescope.training.models import FAMILIES, LatentModel, build_model, register

CLASSES = tuple(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits()
    return x, y


def native_reconstruction(style: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the model itself rebuilds from the mean code, as pixels in [0, 1] (its own conventions)."""
    with torch.no_grad():
        if style == "examples":
            return model.decode(model.encode(x.flatten(1))[0]).view_as(x)
        if style == "pythae":
            return model.decoder(model.encoder(x).embedding).reconstruction
        if style == "diffusers":
            return (model.decode(model.encode(2 * x - 1).latent_dist.mode()).sample + 1) / 2
        if style == "antixk":
            return (model.decode(model.encode(2 * x - 1)[0]) + 1) / 2
        return torch.sigmoid(model.decode(model.encode(x)))


@pytest.mark.parametrize("style", sorted(STYLES))
def test_the_adapter_reads_each_style_and_reconstructs_as_the_model_does(style: str, test_images) -> None:
    x, y = test_images
    model = adapt(trained(style), x, class_names=CLASSES)
    r = model.reading
    assert (r.input_shape, r.input_range, r.output, r.prior) == EXPECTED[style]
    description = check_contract(model)
    assert description.family == "foreign" and description.image_shape == (1, 8, 8)
    assert description.latent_dim == (8 if style == "diffusers" else 4)  # spatial [2, 2, 2] codes, flattened
    assert description.has_prior == EXPECTED[style][3] and description.condition == Condition()
    post = model.encode(x[:16])
    assert isinstance(post, Posterior) and post.mean.shape == (16, description.latent_dim)
    assert post.deterministic == (not description.has_prior)
    recon = model.decode(post.mean)
    assert recon.shape == (16, 1, 8, 8) and recon.min() >= 0 and recon.max() <= 1
    torch.testing.assert_close(recon, native_reconstruction(style, trained(style), x[:16]).clamp(0, 1),
                               atol=1e-5, rtol=1e-5)
    assert float((recon - x[:16]).pow(2).mean()) < float((x[:16] - x.mean(0)).pow(2).mean())  # it really rebuilds
    kl = model.kl_per_dim(post)
    assert kl.shape == post.mean.shape and ((kl > 0).any() == description.has_prior)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_panel_works_through_the_explorers_own_code_path(style: str, test_images) -> None:
    """Encode the images into the store, draw a map, decode a slider move, sample a class."""
    x, y = test_images
    store = ModelStore(None, torch.device("cpu"))
    model = adapt(trained(style), x, class_names=CLASSES)
    store.add_model("mine", model, EvalData((x.numpy() * 255).round().astype(np.uint8), y.numpy(), "test digits"))
    entry = store.open_name("mine")
    assert entry.has_points and len(entry.latents) == 300 and entry.description.class_names == CLASSES
    projection = fit_projection(entry.latents.mean, "pca", 2)
    figure = map_figure(entry, MapView(entry.key, projection, np.arange(300), "pca", "class"), "prior")
    assert sum(len(t.x) for t in figure.data if t.customdata is not None) == 300
    assert {t.name for t in figure.data} >= {"three", "prior samples", "you are here", "path"}
    images, how = sample_class(entry, 3, 12, seed=0, temperature=1.0)
    assert images.shape == (12, 1, 8, 8) and f"Gaussian fitted to the codes of the {int((y == 3).sum())} “three” images" in how.note


def test_a_deterministic_foreign_model_says_why_its_prior_samples_are_noise(test_images) -> None:
    model = adapt(trained("logit-ae"), test_images[0])
    description = model.describe()
    assert not description.has_prior and "no prior" in description.prior_note
    assert float(model.kl_per_dim(model.encode(test_images[0][:4])).abs().sum()) == 0


def test_spatial_codes_keep_their_shape_for_the_decoder(test_images) -> None:
    model = adapt(trained("diffusers"), test_images[0])
    assert model.reading.latent_shape == (2, 2, 2)
    z = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert z.shape == (5, 8) and model.decode(z).shape == (5, 1, 8, 8)


# -- what the adapter refuses ---------------------------------------------------------------------
def test_an_untrained_model_is_refused_with_the_keywords_to_set(test_images) -> None:
    """No reading reconstructs the images clearly best: never a silently wrong picture."""
    torch.manual_seed(0)
    with pytest.raises(AdapterError, match=r"Pass output='pixels', 'logits' or 'tanh' and input_range="):
        adapt(STYLES["antixk"](), test_images[0])
    # ... and said explicitly, it is accepted
    model = adapt(STYLES["antixk"](), test_images[0], output="tanh", input_range="symmetric")
    assert model.reading.output == "tanh"


def test_without_images_the_outputs_decide_or_the_adapter_asks(test_images) -> None:
    assert adapt(trained("examples"), image_shape=(1, 8, 8)).reading.output == "pixels"
    # logits, tanh values and pixels that overshoot are told apart only by reconstructing images
    for style in ("logit-ae", "antixk"):
        with pytest.raises(AdapterError, match="without images.*pass output='pixels', 'logits' or 'tanh'"):
            adapt(trained(style), image_shape=(1, 8, 8))
    assert adapt(trained("logit-ae"), image_shape=(1, 8, 8), output="logits").reading.output == "logits"
    with pytest.raises(AdapterError, match=r"pass image_shape=\(C, H, W\)"):
        adapt(trained("antixk"))


def test_outputs_the_adapter_cannot_read_name_the_keyword() -> None:
    class NoMethods(nn.Module):
        pass

    class ThreeTensors(nn.Module):
        def encode(self, x):  # noqa: ANN001, ANN202
            return x.flatten(1)[:, :2], x.flatten(1)[:, :2], x.flatten(1)[:, :3]

        def decode(self, z):  # noqa: ANN001, ANN202
            return torch.zeros(len(z), 1, 2, 2)

    class Opaque(nn.Module):
        def encode(self, x):  # noqa: ANN001, ANN202
            return object()

        def decode(self, z):  # noqa: ANN001, ANN202
            return z

    with pytest.raises(AdapterError, match="no encode and decode methods"):
        adapt(NoMethods(), image_shape=(1, 2, 2))
    with pytest.raises(AdapterError, match="encode_output=lambda out"):
        adapt(ThreeTensors(), image_shape=(1, 2, 2))
    with pytest.raises(AdapterError, match="cannot read a code"):
        adapt(Opaque(), image_shape=(1, 2, 2))
    with pytest.raises(AdapterError, match="output must be 'auto' or one of"):
        adapt(trained("examples"), image_shape=(1, 8, 8), output="sigmoid")
    with pytest.raises(AdapterError, match="spread='std' or spread='logvar'"):  # (mean, spread >= 0): which?
        adapt(ThreeTensors(), image_shape=(1, 2, 2), encode_output=lambda out: (out[0], out[1]), output="pixels")
    model = adapt(ThreeTensors(), image_shape=(1, 2, 2), encode_output=lambda out: {"mean": out[0], "logvar": out[1]},
                  output="pixels")  # the keywords that settle it
    assert model.describe().latent_dim == 2


def test_an_encoder_that_fails_on_every_input_shape_is_named(test_images) -> None:
    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 2)

        def encode(self, x):  # noqa: ANN001, ANN202
            return self.fc(x)

        def decode(self, z):  # noqa: ANN001, ANN202
            return torch.sigmoid(z)

    with pytest.raises(AdapterError, match="encode failed on image inputs.*and on flat inputs.*input_shape="):
        adapt(Wrong(), test_images[0])


def test_distribution_objects_and_dict_outputs_are_read() -> None:
    from vaescope.adapter import pixels_from, posterior_from

    mean, logvar = torch.zeros(2, 3), torch.full((2, 3), -1.0)
    got = posterior_from(torch.distributions.Normal(mean, (0.5 * logvar).exp()))
    torch.testing.assert_close(got[1], logvar)
    got = posterior_from({"mu": mean, "log_std": 0.5 * logvar})
    torch.testing.assert_close(got[1], logvar)
    got = posterior_from(DiagonalGaussian(mean, logvar))
    torch.testing.assert_close(got[1], logvar)
    assert pixels_from({"logits": mean})[1] == "logits"
    assert pixels_from(torch.distributions.Bernoulli(probs=torch.full((2, 3), 0.3)))[1] == "pixels"
    torch.testing.assert_close(to_unit(torch.tensor([-1.0, 0.0, 1.0]), "tanh"), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("layout", ["nchw", "nhw", "nhwc", "flat", "uint8", "dataset"])
def test_images_arrive_in_every_common_layout(layout: str, test_images) -> None:
    x = test_images[0][:10]
    y = test_images[1][:10]
    given = {"nchw": x.numpy(), "nhw": x[:, 0].numpy(), "nhwc": x.permute(0, 2, 3, 1).numpy(),
             "flat": x.flatten(1), "uint8": (x * 255).round().to(torch.uint8).numpy(),
             "dataset": [(Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)), int(y[i]))
                         for i in range(10)]}[layout]
    images, labels = images_as_tensor(given)
    assert images.shape == (10, 1, 8, 8) and images.dtype == torch.float32
    torch.testing.assert_close(images, x, atol=0.5 / 255 + 1e-6, rtol=0)
    if layout == "dataset":
        assert labels.tolist() == y.tolist()


@pytest.mark.parametrize("bad, message", [
    (np.full((2, 1, 4, 4), -0.5, np.float32), r"must lie in \[0, 1\]"),
    (np.full((2, 1, 4, 4), np.nan, np.float32), "NaN"),
    (np.zeros((2, 5, 4, 4), np.float32), "C = 1 or 3"),
    (np.zeros((2, 50), np.float32), "not square grey or RGB"),
    ("pictures", "numpy array, a torch tensor or a torch Dataset"),
])
def test_images_that_cannot_be_read_are_refused(bad: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        images_as_tensor(bad)


# -- a new family: one file (here, this test file) and a registration ------------------------------
@pytest.fixture
def tiny_linear_family():
    @register("tiny-linear")
    class TinyLinear(LatentModel):
        """A linear Gaussian VAE, defined here and nowhere else."""

        showcase_rank = 9

        def __init__(self, config: ModelConfig) -> None:
            super().__init__(config)
            c, h, w = config.image_shape
            self.enc = nn.Linear(c * h * w, 2 * config.latent_dim)
            self.dec = nn.Sequential(nn.Linear(config.latent_dim, c * h * w), nn.Unflatten(1, config.image_shape))

        def _words(self) -> tuple[str, str, str]:
            return "Tiny linear VAE", "A linear encoder and decoder with a Gaussian code.", ""

        def encode(self, x, condition=None):  # noqa: ANN001, ANN201
            mean, logvar = self.enc(x.flatten(1)).chunk(2, -1)
            return Posterior(mean, logvar.clamp(-12, 8))

        def decode_logits(self, z, condition=None):  # noqa: ANN001, ANN201
            return self.dec(z)

    yield TinyLinear
    FAMILIES.pop("tiny-linear")


def test_a_new_family_is_one_class_and_a_decorator_and_the_explorer_needs_no_edit(
        tiny_linear_family, test_images, tmp_path: Path) -> None:
    from vaescope.training.checkpoint import CheckpointMeta, save_checkpoint
    from vaescope.training.config import TrainConfig
    from vaescope.training.data import load_digits
    from vaescope.training.train import model_config_for, train

    data = load_digits(seed=0)
    config = model_config_for(data, model_type="tiny-linear", latent_dim=3)
    result = train(config, TrainConfig(dataset="digits", epochs=3, eval_k=2, lr=1e-2), tmp_path / "run",
                   dataset=data, show_progress=False)
    assert isinstance(result.model, tiny_linear_family) and result.metrics["active_units"] >= 1
    store = ModelStore(tmp_path / "run", torch.device("cpu"))
    entry = store.open_name("model.safetensors")  # the explorer opens it from the file alone
    assert entry.description.title == "Tiny linear VAE" and entry.has_points
    images, _ = sample_class(entry, 4, 3, seed=0, temperature=1.0)
    assert images.shape == (3, 1, 8, 8)
    meta = CheckpointMeta(model_config=config, train_config={}, dataset=data.info.to_dict())
    save_checkpoint(tmp_path / "again.safetensors", build_model(config), meta)
    assert vs.load(tmp_path / "again.safetensors", device="cpu").describe().family == "tiny-linear"


# -- the Python API ---------------------------------------------------------------------------------
def test_vs_load_returns_the_model_with_its_metadata(tiny_checkpoint_dir: Path) -> None:
    model = vs.load(tiny_checkpoint_dir / "tiny-cvae.safetensors", device="cpu")
    assert isinstance(model, LatentModel) and not model.training
    assert model.meta.dataset["name"] == "digits" and model.meta.model_type == "cvae"
    assert isinstance(model.describe(), Description) and model.describe().condition.kind == "class"
    assert model.describe().class_names[2] == "2"


def _map_points(figure: dict) -> int:
    """Points of the data traces of a plotly figure as Gradio sends it (arrays may be base64 "bdata")."""
    plot = json.loads(figure["plot"]) if isinstance(figure, dict) and "plot" in figure else figure

    def length(values: object) -> int:
        if isinstance(values, dict) and "bdata" in values:
            return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
        return len(values)

    return sum(length(t["customdata"]) for t in plot["data"] if t.get("customdata") is not None)


@pytest.mark.parametrize("style", ["examples", "antixk"])
def test_vs_explore_serves_a_foreign_model_until_closed(style: str, test_images) -> None:
    x, y = test_images
    app = vs.explore(trained(style), images=x.numpy(), labels=y.numpy(), class_names=CLASSES, name="my-vae",
                     device="cpu", server_port=None, prevent_thread_lock=True, inbrowser=False, quiet=True)
    try:
        assert app.local_url.startswith("http://127.0.0.1:")  # private by default
        client = Client(app.local_url, verbose=False)
        out = client.predict("my-vae", api_name="/load_checkpoint")
        card = next(o for o in out if isinstance(o, str) and "### my-vae" in o)
        assert "your model" in card and "300 images given to vs.explore" in " ".join(o for o in out if isinstance(o, str))
        figure, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
        assert _map_points(figure) == 300 and "my-vae" in info
        image, note, *_ = client.predict(2.0, 0, api_name="/slider_0")
        assert Path(image).is_file() and "my-vae" in note
        grid, note = client.predict(7, 4, 0, 1.0, api_name="/sample_class")
        assert note.startswith("**seven** · my-vae:")
    finally:
        app.close()
    import httpx

    with pytest.raises(httpx.ConnectError):  # closed: nothing listens on the port any more
        httpx.get(app.local_url, timeout=5)


def test_vs_explore_refuses_what_it_cannot_use(test_images, tmp_path: Path) -> None:
    x, y = test_images
    with pytest.raises(InputError, match="one label per image"):
        vs.explore(trained("examples"), images=x.numpy(), labels=y.numpy()[:10], prevent_thread_lock=True)
    with pytest.raises(InputError, match="labels go up to 9 but there are 2 class names"):
        vs.explore(trained("examples"), images=x.numpy(), labels=y.numpy(), class_names=["a", "b"],
                   prevent_thread_lock=True)
    with pytest.raises(InputError, match="needs a model"):
        vs.explore(None)
    with pytest.raises(InputError, match="go with a model object"):
        vs.explore(tmp_path, images=x.numpy())
