"""Researchers' own models as they really are, part two (issue #32): a diffusers-style VAE whose code
is a 4 x 8 x 8 map keeps that shape (sliders named by channel and position, channel-wise traversal,
the code drawn as channel maps, maps of the flattened code), and a tabular VAE explored with
``vs.explore(model, features=X, feature_names=...)`` has its rows drawn as bar charts by name
wherever a picture would be. Each slip with the new keywords is refused in one sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign_models import (
    LATENT_CHANNELS,
    TinyAutoencoderKL,
    digits16,
    trained,
    trained_spatial,
    trained_tabular,
    wine,
)
from PIL import Image

import vaescope
import vaescope as vs
from vaescope.adapter import adapt, given_features
from vaescope.contract import ContractError, Description
from vaescope.errors import InputError
from vaescope.explorer.core import dims, figures
from vaescope.explorer.core.codes import decode
from vaescope.explorer.ui.app import build_app
from vaescope.explorer.ui.common import big, grid
from vaescope.explorer.ui.state import Session

QUIET = {"prevent_thread_lock": True, "inbrowser": False, "quiet": True}
CPU = torch.device("cpu")
NAMED = re.compile(r"^c[0-3] \([0-7],[0-7]\)")  # a value of a 4 x 8 x 8 code: "c2 (3,5)"


# -- spatial codes ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spatial_app():
    """The explorer on the diffusers-style VAE, as vs.explore builds it (not served)."""
    x, y = digits16()[2:]
    store, name = vaescope._store_for(trained_spatial(), x.numpy(), y.numpy(), None, latents=None, name="kl",
                                      device=CPU, adapter_options={})
    return build_app(store=store), name


def _session(app, name: str) -> Session:
    session = Session()
    app.panels["models"].load_checkpoint(name, session)
    return session


def test_a_spatial_code_keeps_its_shape_and_is_flattened_everywhere_else() -> None:
    x = digits16()[2][:16]
    module = trained_spatial()
    model = adapt(module, x)
    d = model.describe()
    assert d.latent_shape == (LATENT_CHANNELS, 8, 8) and d.latent_dim == 256 and d.spatial
    with torch.no_grad():
        own = module.encode(2 * x - 1).latent_dist
        torch.testing.assert_close(model.encode(x).mean, own.mean.flatten(1))  # flattened in channel-major order
        torch.testing.assert_close(model.decode(own.mean.flatten(1)),
                                   ((module.decode(own.mean).sample + 1) / 2).clamp(0, 1))
    assert d.dim_name(2 * 64 + 3 * 8 + 5) == "c2 (3,5)" and d.dim_name(0) == "c0 (0,0)"
    assert any("flattened to 256 values" in t for t in d.details)
    assert dims.flattened_note(d) == " The map places each image by its whole 4×8×8 code, flattened to 256 values."
    examples = adapt(trained("examples"), image_shape=(1, 8, 8))
    assert examples.describe().latent_shape == () and examples.describe().dim_name(3) == "z3"
    assert dims.flattened_note(examples.describe()) == ""


def test_a_code_with_one_axis_of_values_stays_flat() -> None:
    """A code returned as [B, 1, D] (an extra axis, not channels and positions) is named z0, z1, ..."""

    class Unsqueezed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = torch.nn.Linear(64, 4), torch.nn.Linear(4, 64)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x.flatten(1))[:, None]

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.dec(z[:, 0])).view(-1, 1, 8, 8)

    model = adapt(Unsqueezed(), image_shape=(1, 8, 8))
    assert model.reading.latent_shape == (1, 4) and model.describe().latent_shape == ()
    assert model.describe().dim_name(2) == "z2" and model.decode(torch.zeros(2, 4)).shape == (2, 1, 8, 8)


def test_a_latent_shape_that_does_not_fill_the_code_is_refused() -> None:
    with pytest.raises(ContractError, match=r"latent_shape \[4, 8, 4\] must be positive sizes whose product is the "
                                            r"latent_dim, 256"):
        Description("foreign", "", "", (1, 16, 16), 256, latent_shape=(4, 8, 4))


def test_sliders_open_on_whole_channels_and_name_single_values_by_channel_and_position(spatial_app) -> None:
    app, name = spatial_app
    session = _session(app, name)
    entry = app.ctx.store.open_name(name)
    traversal = app.panels["traversal"]
    pages = [value for _, value in dims.page_choices(entry)]
    assert pages[0] == "channels:0" and pages[1] == "z:0" and len(pages) == 1 + 256 // dims.SLIDERS
    opened = traversal.on_model(entry, session)
    assert opened[traversal.page].value == "channels:0"
    labels = [opened[s].label for s in traversal.sliders[:LATENT_CHANNELS]]
    assert [lab.split(" · ")[:2] for lab in labels] == [[f"c{c}", "whole channel (64 values)"] for c in range(4)]
    assert all(opened[s].visible is False for s in traversal.sliders[LATENT_CHANNELS:])
    assert opened[traversal.code_image].visible is True
    assert opened[traversal.code_image].label == "The code: 4 channel maps (8×8) · blue −3 · white 0 · red +3"
    lo, hi = dims.slider_bounds(entry, "prior")  # a N(0, I) prior over 256 values: exactly ±3, not estimates
    assert (lo == -3).all() and (hi == 3).all()
    view = traversal.traverse_view("z:0", "prior", session)
    names = [view[s].label for s in traversal.sliders]
    assert all(NAMED.match(label) for label in names), names
    info = dims.dim_info(entry)
    assert names[0].startswith(entry.description.dim_name(int(info.order[0])) + " · KL")  # most used first


def test_the_kl_chart_names_the_values_of_a_spatial_code(spatial_app) -> None:
    from vaescope.explorer.core.diagnostics import kl_panel

    app, name = spatial_app
    figure, _ = kl_panel(app.ctx.store.open_name(name))
    shown = {(int(x), str(c)) for trace in figure.data for x, c in zip(trace.x, trace.customdata, strict=True)}
    assert len(shown) == 256 and (2 * 64 + 3 * 8 + 5, "c2 (3,5)") in shown
    assert all(t.hovertemplate.startswith("%{customdata}: ") for t in figure.data)


def test_a_channel_slider_moves_its_whole_map_and_the_image_more_than_one_value_does(spatial_app) -> None:
    app, name = spatial_app
    session = _session(app, name)
    entry = app.ctx.store.open_name(name)
    traversal = app.panels["traversal"]
    start = session.code
    base = decode(entry, start.z, None)[0]
    out = traversal.slider_handler(1)(2.0, "channels:0", session)  # c1 up by 2
    moved = session.code.z - start.z
    np.testing.assert_allclose(moved[64:128], 2.0, atol=1e-5)
    assert not moved[:64].any() and not moved[128:].any()
    assert traversal.code_image in out and traversal.image in out
    by_channel = np.abs(decode(entry, session.code.z, None)[0] - base).mean()
    # the most used single value, moved by as much, barely changes the image (the complaint)
    d = int(dims.dim_info(entry).order[0])
    one = start.z.copy()
    one[d] += 2.0
    by_value = np.abs(decode(entry, one, None)[0] - base).mean()
    assert by_channel > 5 * by_value and by_channel > 0.02
    # an edit of one value rides along when its channel moves again: offsets are means from the start
    traversal.traverse_reset("channels:0", "prior", session)
    traversal.slider_handler(0)(1.0, "z:0", session)  # the most used value: +1 from where it was
    edited = session.code.z.copy()
    c = d // 64
    traversal.slider_handler(c)(dims.channel_offset(entry, edited, start.z0, c) + 0.5, "channels:0", session)
    np.testing.assert_allclose(session.code.z - edited, np.where(np.arange(256) // 64 == c, 0.5, 0.0), atol=1e-5)
    view = traversal.traverse_view("channels:0", "prior", session)
    assert view[traversal.sliders[c]].value == pytest.approx(dims.channel_offset(entry, session.code.z, start.z0, c),
                                                                abs=1e-3)


def test_the_traversal_grid_moves_whole_channels_or_named_values(spatial_app) -> None:
    app, name = spatial_app
    session = _session(app, name)
    traversal = app.panels["traversal"]
    out = traversal.traversal_grid(5, "channels:0", "prior", session)
    assert "rows, top to bottom: c0, c1, c2, c3 (whole channels)" in out[traversal.grid_image].label
    entry = app.ctx.store.open_name(name)
    code = session.code
    lo, hi = dims.channel_bounds(entry, "prior", code.z0)
    codes = dims.channel_codes(entry, code.z, code.z0, np.arange(4), lo, hi, 5)
    assert codes.shape == (20, 256)
    for c in range(4):  # row c moves channel c only, from its lowest to its highest offset
        rows = codes[c * 5:(c + 1) * 5] - code.z
        assert not np.delete(rows, np.s_[c * 64:(c + 1) * 64], axis=1).any()
        np.testing.assert_allclose(rows[:, c * 64:(c + 1) * 64].mean(1), np.linspace(lo[c], hi[c], 5), atol=1e-5)
    out = traversal.traversal_grid(3, "z:0", "prior", session)
    rows = out[traversal.grid_image].label.split("rows, top to bottom: ")[1].split(" · ")[0].split(", ")
    assert len(rows) == dims.SLIDERS and all(NAMED.match(r) for r in rows)


def test_the_code_is_drawn_as_one_heatmap_per_channel() -> None:
    z = np.zeros(4 * 8 * 8, np.float32)
    z[64:128] = 3.0  # channel 1 at +scale: red
    z[128:192] = -3.0  # channel 2 at -scale: blue
    picture = figures.code_maps(z, (4, 8, 8), scale=3.0, cell_px=32)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    row = picture[2 + 16]  # the middle row of the maps
    cells = [row[2 + c * 34 + 16] for c in range(4)]
    assert cells[0].tolist() == [247, 247, 247] and cells[1].tolist() == [178, 24, 43]
    assert cells[2].tolist() == [33, 102, 172]
    np.testing.assert_allclose(figures.heat_rgb(np.array([-6.0, 1.5]), 3.0),  # clipped; halfway to red
                               np.array([[33, 102, 172], [(247 + 178) / 2, (247 + 24) / 2, (247 + 43) / 2]]) / 255,
                               atol=1e-6)


def _rewrite_meta(path: Path, target: Path, change) -> Path:  # noqa: ANN001
    """A copy of a bundle with its metadata JSON changed by ``change(dict)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vaescope.bundle import BUNDLE_KEY

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    data = json.loads(meta[BUNDLE_KEY])
    change(data)
    save_file(tensors, str(target), metadata={BUNDLE_KEY: json.dumps(data)})
    return target


def test_a_bundle_carries_the_code_shape_and_older_bundles_still_load(tmp_path: Path) -> None:
    from vaescope.bundle import BundleError, load_bundle

    x, y = digits16()[2:]
    path = vs.export(trained_spatial(), tmp_path / "kl.safetensors", images=x[:64], labels=y[:64])
    bundle, _, _ = load_bundle(path)
    assert bundle.describe().latent_shape == (4, 8, 8)
    assert bundle.describe().dim_name(100) == "c1 (4,4)"
    older = _rewrite_meta(path, tmp_path / "older.safetensors",
                          lambda d: [d["description"].pop(k) for k in ("latent_shape", "feature_names", "feature_range")])
    assert load_bundle(older)[0].describe().latent_shape == ()  # written before codes kept their shape: flat
    bad = _rewrite_meta(path, tmp_path / "bad.safetensors", lambda d: d["description"].update(latent_shape=[4, 8, 9]))
    with pytest.raises(BundleError, match=r"its latent shape must be a list of at most 4 sizes whose product is the "
                                          r"latent dim 256, got \[4, 8, 9\]"):
        load_bundle(bad)


# -- tables ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table_app():
    x, y, names, classes = wine()
    store, name = vaescope._store_for(trained_tabular(), None, y.numpy(), classes, latents=None, name="wine",
                                      device=CPU, adapter_options={}, features=x.numpy(), feature_names=names)
    return build_app(store=store), name


def test_a_tabular_vae_is_given_its_rows_in_their_own_units() -> None:
    x, y, names, _ = wine()
    module = trained_tabular()
    given, scale = given_features(x, y, None, names)
    assert given.images.shape == (178, 1, 1, 13) and scale.names == names
    model = adapt(module, given.images, labels=given.labels, features=scale)
    d = model.describe()
    assert (d.display, d.image_shape, d.feature_names) == ("features", (1, 1, 13), names)
    assert d.feature_range == scale.ranges and d.latent_shape == ()
    with torch.no_grad():
        mu, logvar = module.encode(x)
        post = model.encode(given.images)
        torch.testing.assert_close(post.mean, mu, atol=1e-4, rtol=1e-4)  # the model saw its own units
        rows = scale.from_unit(model.decode(post.mean).flatten(1))
        torch.testing.assert_close(rows, module.decode(mu), atol=1e-4, rtol=1e-4)  # and was read in them
    # the look-alike is a real model of the table: its rows come back closer than the mean row, and
    # its 2D codes keep the three cultivars apart (nearest class mean)
    assert float((rows - x).pow(2).mean()) < 0.5 * float(x.var(0).mean())
    means = torch.stack([mu[y == c].mean(0) for c in range(3)])
    assert float((torch.cdist(mu, means).argmin(1) == y).float().mean()) > 0.85


def test_vs_explore_takes_a_table_with_feature_names_and_labels(table_app) -> None:
    app, name = table_app
    entry = app.ctx.store.open_name(name)
    d = entry.description
    assert d.display == "features" and d.feature_names[0] == "alcohol" and d.class_names == ("class_0", "class_1", "class_2")
    assert entry.data_origin == "the 178 rows of features given to vs.explore" and len(entry.latents) == 178
    x = wine()[0].numpy()
    lo, hi = np.array(d.feature_range).T
    np.testing.assert_allclose(lo + entry.latents.float_images(slice(0, 5)).reshape(5, 13) * (hi - lo), x[:5],
                               atol=(hi - lo).max() / 255)  # kept as uint8 of each feature's range


def test_a_row_is_drawn_as_bars_of_named_features_everywhere(table_app) -> None:
    app, name = table_app
    session = _session(app, name)
    entry = app.ctx.store.open_name(name)
    row = entry.latents.image(0)
    one = np.asarray(big(entry, row))
    assert one.shape[1] == (figures.FEATURE_BIG.name + figures.FEATURE_BIG.bar + figures.FEATURE_BIG.value + 8)
    assert one.shape[0] == 13 * figures.FEATURE_BIG.row + 8
    # a bar's length follows the value: feature 0 (alcohol) at its range's top fills its track
    top = row.copy()
    top[0, 0, 0] = 1.0
    drawn = figures.feature_pictures(top.reshape(1, 13), entry.description.feature_names, entry.description.feature_range)
    bar = (drawn[0, :, 4 + 8, 4 + figures.FEATURE_BIG.name:4 + figures.FEATURE_BIG.name + figures.FEATURE_BIG.bar] * 255)
    blue = np.all(np.abs(bar.T - np.array(figures.FEATURE_BAR_COLORS[0])) < 2, axis=1)
    base = -entry.description.feature_range[0][0] / np.subtract(*entry.description.feature_range[0][::-1])
    assert blue.sum() == pytest.approx((1 - base) * figures.FEATURE_BIG.bar, abs=3)
    cells = grid(entry, entry.latents.float_images(slice(0, 6)), nrow=3)
    assert cells.shape[1] == 3 * (figures.FEATURE_CELL.name + figures.FEATURE_CELL.bar + 8 + 2) + 2
    # the panels draw it so: traversal, class sampling, reconstructions in the diagnostics
    traversal = app.panels["traversal"]
    shown = np.asarray(traversal.traverse_view("z:0", "prior", session)[traversal.image])
    assert shown.shape == one.shape
    opened = traversal.on_model(entry, session)
    assert opened[traversal.own].visible is False  # no image upload or drawing for a table's rows
    sampling = app.panels["sampling"]
    sampled = Image.open(sampling.sample_class(1, 4, 0, 1.0, session)[sampling.grid].value["path"])
    assert sampled.size == (cells.shape[1] * 2 // 3 + 1, 2 * (13 * figures.FEATURE_CELL.row + 8 + 2) + 2)


def test_a_table_s_rows_are_called_rows(table_app) -> None:
    """Every place that names one of a table's inputs calls it a row, not an image."""
    from vaescope.explorer.core.codes import index_code
    from vaescope.explorer.core.compare import answer

    app, name = table_app
    session = _session(app, name)
    entry = app.ctx.store.open_name(name)
    assert index_code(entry, 3).source.startswith("test row #3")
    assert app.panels["denoising"].on_model(entry, session)[app.panels["denoising"].index].label == "Test row #"
    interpolation = app.panels["interpolation"]
    assert {interpolation.on_model(entry, session)[box].label for box in interpolation.index.values()} == {"Test row #"}
    assert answer("traverse", entry, [2]).rows.note.startswith("from test row #2")
    traversal = app.panels["traversal"]
    assert traversal.on_model(entry, session)[traversal.index].label == "Test row #"
    with pytest.raises(InputError, match="Test row #"):
        index_code(entry, 10_000)


def test_more_features_than_rows_of_bars_are_drawn_as_a_profile() -> None:
    drawn = figures.pictures(np.full((2, 1, 1, 100), 0.75), figures.Drawing("features"))
    assert drawn.shape == (2, 3, 96, 200)
    column = drawn[0, :, :, 0]  # a bar from the baseline (0, at the bottom) up to 0.75; a white gap beside it
    assert np.allclose(column[:, :20], 1.0) and np.allclose(column[:, 30:].T, np.array(figures.FEATURE_BAR_COLORS[0]) / 255)
    assert np.allclose(drawn[0, :, :, 1], 1.0)


def test_a_tabular_bundle_draws_its_rows_by_name_too(tmp_path: Path) -> None:
    from vaescope.bundle import load_bundle

    x, y, names, classes = wine()
    path = vs.export(trained_tabular(), tmp_path / "wine.safetensors", features=x, labels=y, class_names=classes,
                     feature_names=names)
    bundle, _, (sample, labels) = load_bundle(path)
    d = bundle.describe()
    assert (d.display, d.feature_names, d.class_names) == ("features", names, classes) and sample.shape == (178, 1, 1, 13)
    given, scale = given_features(x, y, classes, names)
    adapted = adapt(trained_tabular(), given.images, labels=given.labels, features=scale)
    z = adapted.encode(given.images[:16]).mean
    torch.testing.assert_close(bundle.encode(given.images[:16]).mean, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(bundle.decode(z), adapted.decode(z), atol=1e-4, rtol=0)


@pytest.mark.parametrize("call, message", [
    (lambda x, n: vs.explore(trained_tabular(), features=x[:, 0], **QUIET),
     r"^features must be rows of numbers \[N, F\] \(one row per example, one column per feature\), got shape \[178\]$"),
    (lambda x, n: vs.explore(trained_tabular(), features=np.where(np.arange(13) == 2, np.nan, x.numpy()), **QUIET),
     r"^features must be finite: 178 of the 178 rows hold NaN or infinite values \(drop or impute them first\)$"),
    (lambda x, n: vs.explore(trained_tabular(), features=x.numpy().astype(str), **QUIET),
     r"^features must be numbers \(float or integer\), got <U"),
    (lambda x, n: vs.explore(trained_tabular(), features=x.tolist(), **QUIET),
     r"^features must be rows of numbers \[N, F\] \(a numpy array, a torch tensor or a pandas DataFrame\), got list$"),
    (lambda x, n: vs.explore(trained_tabular(), features=x, feature_names=n[:12], **QUIET),
     r"^feature_names must name each of the 13 columns of features, got 12 names$"),
    (lambda x, n: vs.explore(trained_tabular(), features=x, feature_names="alcohol", **QUIET),
     r"^feature_names must be a list of 13 names, one per column of features, got str$"),
    (lambda x, n: vs.explore(trained_tabular(), images=x, feature_names=n, **QUIET),
     r"^feature_names= go with features=: pass the table's rows as features=X \[N, F\]$"),
    (lambda x, n: vs.explore(trained_tabular(), images=digits16()[2], features=x, **QUIET),
     r"^give images= or features=, not both: features= are a table's rows \[N, F\], images= pictures$"),
    (lambda x, n: vs.explore(latents=np.zeros((178, 2)), features=x, **QUIET),
     r"^features= go with a model that encodes them; precomputed codes go alone as latents=$"),
    (lambda x, n: vs.explore("model.safetensors", features=x, **QUIET),
     r"^features= go with a model object \(your PyTorch module\); a file given to vs.explore brings its own data$"),
    (lambda x, n: vs.explore(trained_tabular(), features=x, input_range="symmetric", **QUIET),
     r"^input_range= is for images; with features= the model reads rows \[B, F\] in the features' own units and "
     r"its decoder gives rows in the same units: leave it out$"),
    (lambda x, n: vs.explore(trained_tabular(), features=x, image_shape=(1, 1, 13), **QUIET),
     r"^image_shape= is for images; with features= the model reads rows"),
    (lambda x, n: vs.export(trained_tabular(), "wide.safetensors", features=np.zeros((4, 300))),
     r"^a bundle holds rows of at most 256 features, got 300; explore a wider table with "
     r"vs.explore\(model, features=X\)$"),
    (lambda x, n: adapt(trained_tabular(), features=x),
     r"^features= takes the FeatureScale of vaescope.adapter.given_features, got Tensor; vs.explore\(model, "
     r"features=X\) builds it from the rows X \[N, F\]$"),
])
def test_feature_keywords_that_cannot_work_are_refused_in_one_sentence(call, message: str) -> None:  # noqa: ANN001
    x, _, names, _ = wine()
    with pytest.raises(InputError, match=message):
        call(x, names)


def test_vaescopes_own_models_refuse_features_in_one_sentence(tiny_checkpoint_dir: Path) -> None:
    model = vs.load(tiny_checkpoint_dir / "tiny-vae.safetensors", device="cpu")
    with pytest.raises(InputError, match=r"^vaescope's own models read images; features= are for your own model of "
                                         r"a table's rows$"):
        vs.explore(model, features=np.zeros((4, 64)), **QUIET)


def test_a_data_frame_names_its_features() -> None:
    pd = pytest.importorskip("pandas")
    x, y, names, _ = wine()
    frame = pd.DataFrame(x.numpy(), columns=list(names))
    given, scale = given_features(frame, y)
    assert scale.names == names and given.images.shape == (178, 1, 1, 13)
    assert given_features(frame, feature_names=[f"v{i}" for i in range(13)])[1].names[0] == "v0"


def test_the_look_alike_is_an_autoencoder_kl_in_miniature() -> None:
    """The shapes diffusers' AutoencoderKL gives: moments of 2 * 4 channels at 8x8 chunked into mean
    and log-variance, and a decoder whose linear output is the ``sample`` of a DecoderOutput."""
    model = TinyAutoencoderKL()
    out = model.encode(torch.zeros(2, 1, 16, 16))
    assert out.latent_dist.mean.shape == (2, 4, 8, 8) and out.latent_dist.logvar.shape == (2, 4, 8, 8)
    assert model.decode(out.latent_dist.mode()).sample.shape == (2, 1, 16, 16)
