"""Researchers' own models as they really are (issue #32): AntixK's ConditionalVAE and IWAE, home-made
CVAEs, a decoder that gives NaN, more images than the map holds, string labels, notebook habits and the
slips a first session makes; and embeddings files that carry class names or hold more rows than the
map reads. Each slip is refused in one sentence, asserted here word for word where it matters."""

from __future__ import annotations

import copy
import json
import socket
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from foreign_models import (
    CONDITIONAL,
    AntixKConditionalVAE,
    NaNDecoder,
    digits,
    trained,
    trained_more,
)
from serving import free_port
from torch import nn

import vaescope
import vaescope as vs
from vaescope.adapter import (
    AdapterError,
    ModelFailed,
    adapt,
    given_images,
    labels_as_classes,
    subset_rows,
)
from vaescope.contract import Condition
from vaescope.errors import InputError
from vaescope.explorer.core import embeddings
from vaescope.explorer.core.embeddings import read_embeddings, seeded_rows
from vaescope.explorer.core.sampling import sample_class
from vaescope.limits import MAX_MAP_POINTS, MAX_SAMPLE_IMAGES

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUIET = {"prevent_thread_lock": True, "inbrowser": False, "quiet": True}


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits()
    return x, y


def _tiled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 digit images (the 300 test digits over and over) and their labels."""
    _, _, x, y = digits()
    rows = np.arange(n) % len(x)
    return (x.numpy()[rows] * 255 + 0.5).astype(np.uint8), y.numpy()[rows]


# -- A: more images than the map holds: images and labels subsampled together ------------------------
def test_more_images_than_the_map_holds_keep_their_labels_and_the_map_says_so() -> None:
    images, labels = _tiled(MAX_MAP_POINTS + 1)
    store, name = vaescope._store_for(trained("examples"), images, labels, None, latents=None, name="mine",
                                      device=torch.device("cpu"), adapter_options={})
    data = store._memory[name].data
    rows = subset_rows(len(images), MAX_MAP_POINTS)
    assert len(data) == MAX_MAP_POINTS and (data.labels == labels[rows]).all() and (data.images == images[rows]).all()
    assert data.origin == "a seeded subset (seed 0) of 70,000 of the 70,001 images given to vs.explore"


def test_a_dataset_is_read_only_at_the_rows_kept() -> None:
    images, labels = _tiled(50)
    read: list[int] = []

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            read.append(i)
            return images[i], int(labels[i])

    given = given_images(Pairs(), limit=20)
    rows = subset_rows(50, 20)
    assert sorted(read) == rows.tolist() and (given.labels.numpy() == labels[rows]).all()
    assert given.origin("vs.explore") == "a seeded subset (seed 0) of 20 of the 50 images given to vs.explore"


def test_vs_export_keeps_a_seeded_subset_of_images_with_their_labels(tmp_path: Path) -> None:
    from vaescope.bundle import load_bundle

    images, labels = _tiled(MAX_SAMPLE_IMAGES + 1)
    with pytest.warns(UserWarning, match=r"the bundle carries a seeded subset \(seed 0\) of 20,000 of the 20,001 "
                                         r"images given to vs.export as its sample"):
        path = vs.export(trained("examples"), tmp_path / "many.safetensors", images=images, labels=labels)
    _, _, (sample, sample_labels) = load_bundle(path)
    rows = subset_rows(len(images), MAX_SAMPLE_IMAGES)
    assert (sample == images[rows]).all() and (sample_labels == labels[rows]).all()


# -- B: slips, each in one sentence ------------------------------------------------------------------
def test_string_labels_are_class_names_sorted_or_in_class_names_order(test_images) -> None:
    x, y = test_images
    words = np.array(CLASSES)[y.numpy()]
    model, data = vaescope._as_model(trained("examples"), x.numpy(), words.tolist(), None, device="cpu", name=None,
                                     options={})
    assert model.describe().class_names == tuple(sorted(CLASSES))
    assert [model.describe().class_names[i] for i in data.labels] == words.tolist()
    model, data = vaescope._as_model(trained("examples"), x.numpy(), words, CLASSES, device="cpu", name=None,
                                     options={})
    assert model.describe().class_names == CLASSES and (data.labels == y.numpy()).all()


def test_a_string_label_not_among_the_class_names_is_refused_in_one_sentence(test_images) -> None:
    x, y = test_images
    words = np.array(CLASSES)[y.numpy()]
    with pytest.raises(InputError) as info:
        vs.explore(trained("examples"), images=x.numpy(), labels=words, class_names=CLASSES[:9], **QUIET)
    assert str(info.value) == ("label 'nine' is not among the class_names ('zero', 'one', 'two', 'three', 'four', "
                               "'five', 'six', 'seven', ...); give class_names that name every label, or leave "
                               "class_names out to number the labels in sorted order")


@pytest.mark.parametrize("labels, message", [
    (np.eye(10)[np.arange(300) % 10], r"^labels must be one class per image, of shape \[300\], got \[300, 10\] "
                                      r"\(one-hot rows\? pass labels.argmax\(1\)\)$"),
    (np.full(300, 0.5), r"^labels must be whole numbers \(classes 0, 1, ...\) or strings, got 0.5 among them$"),
    ([1, "two"] * 150, r"^labels must be integers or strings \(class names\), not a mix: found 1 and 'two'$"),
    (np.zeros(299, int), r"^labels must give one label per image: 299 labels for 300 images$"),
])
def test_labels_that_are_not_one_class_per_image_are_refused_in_one_sentence(labels: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        labels_as_classes(labels, 300)


def test_port_is_read_as_server_port_and_an_unknown_keyword_is_one_sentence() -> None:
    assert vaescope._launch_options({"port": 7861, "host": "0.0.0.0"}) == {"server_port": 7861, "server_name": "0.0.0.0"}
    with pytest.raises(InputError) as info:
        vs.explore(trained("examples"), prot=7860)
    assert str(info.value) == ("vs.explore got an unknown keyword prot= (did you mean port=?); it takes the adapter's "
                               "keywords (input_range=, output=, spread=, condition=, ...) and Gradio's launch() "
                               "keywords (server_port=, server_name=, share=, prevent_thread_lock=, ...)")
    with pytest.raises(InputError, match=r"did you mean input_range=\?"):
        vs.explore(trained("examples"), input_ragne="unit")
    with pytest.raises(InputError, match=r"^pass server_port= or port=, not both$"):
        vs.explore(trained("examples"), port=1, server_port=2)


def test_a_port_in_use_is_one_sentence_and_the_model_is_left_as_it_was(test_images) -> None:
    x, y = test_images
    model = copy.deepcopy(trained("examples")).train()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(InputError) as info:
            vs.explore(model, images=x.numpy(), labels=y.numpy(), device="cpu", server_port=port, **QUIET)
    assert str(info.value) == (f"port {port} is in use: pass server_port=... (another port, or None for the first "
                               "free one), or close the earlier app with app.close()")
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.slow
def test_rerunning_a_cell_on_the_same_port_closes_the_explorer_it_started_there(test_images) -> None:
    x, y = test_images
    port = free_port()
    first = vs.explore(trained("examples"), images=x.numpy(), device="cpu", server_port=port, **QUIET)
    try:
        with pytest.warns(UserWarning, match=f"closed the explorer this process started earlier on port {port}"):
            second = vs.explore(trained("examples"), images=x.numpy(), device="cpu", server_port=port, **QUIET)
        try:
            assert not first.is_running and second.is_running and second.server_port == port
        finally:
            second.close()
    finally:
        first.close()
    assert port not in vaescope._SERVED


def test_a_decoder_that_gives_nan_is_counted_in_one_sentence(test_images) -> None:
    x, _ = test_images
    model = NaNDecoder(trained("examples"))
    with torch.no_grad():
        bad = int((model.encode(x[:64].flatten(1))[0][:, 0] > 0).sum())
    assert 0 < bad < 64
    with pytest.raises(ModelFailed) as info:
        adapt(model, x)
    assert str(info.value) == (f"decode returned NaN for {bad} of the 64 images given (decoding their codes); the "
                               "adapter cannot read a model that gives them (a diverged run or broken weights?): fix "
                               "the model, or pass decode_output= to return finite values")
    with pytest.raises(ModelFailed, match="decode returned NaN for"):  # the keywords do not hide it
        adapt(model, x, output="pixels", input_range="unit")


def test_a_decode_that_takes_another_shape_is_named_with_the_call_shape(test_images) -> None:
    x, _ = test_images
    iwae = trained_more("iwae")
    with pytest.raises(AdapterError) as info:
        adapt(iwae, x)
    assert str(info.value) == (
        "decode(z [64, 4]) raised ValueError: not enough values to unpack (expected 3, got 2); the adapter calls "
        "decode with the codes, shape [B, 4]: if the model's decode takes another shape, say how with "
        "decode_input=, e.g. decode_input=lambda z: z[:, None] for a decode that takes [B, S, D] (AntixK's IWAE), "
        "and decode_output=lambda out: ... for what it returns (the same keywords for vaescope.adapter.adapt and "
        "vs.export)")
    model = adapt(iwae, x, decode_input=lambda z: z[:, None])  # as the message says
    with torch.no_grad():
        mu = iwae.encode(x[:8])[0]
        torch.testing.assert_close(model.decode(model.encode(x[:8]).mean), iwae.decode(mu[:, None])[:, 0])


# -- C: silent surprises --------------------------------------------------------------------------------
def test_vs_explore_refuses_a_file_as_vs_load_does_before_serving(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(InputError) as loaded:
        vs.load(path, device="cpu")
    with pytest.raises(InputError) as explored:
        vs.explore(path, **QUIET)
    assert str(explored.value) == str(loaded.value) and "Python pickles" in str(loaded.value)
    with pytest.raises(InputError, match="file not found"):
        vs.explore(tmp_path / "missing.safetensors", **QUIET)


def test_vs_export_refuses_a_name_that_is_not_safetensors_before_exporting(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        vs.export(trained("examples"), tmp_path / "m.onnx", image_shape=(1, 8, 8))
    assert str(info.value) == ("vs.export writes one .safetensors file (the explorer lists those, and onnx.load "
                               "cannot read a bundle): name it 'm.safetensors', not 'm.onnx'")
    assert list(tmp_path.iterdir()) == []


def _modes(module: nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


def test_vs_export_puts_the_module_back_in_its_mode(tmp_path: Path, test_images) -> None:
    x, y = test_images
    model = copy.deepcopy(trained("examples")).train()
    model.fc3.eval()  # a mixed state (a frozen part) must come back as it was
    before = _modes(model)
    vs.export(model, tmp_path / "m.safetensors", images=x[:32], labels=y[:32])
    assert _modes(model) == before


def test_vs_explore_serves_the_module_in_eval_mode_and_close_puts_it_back(test_images) -> None:
    x, y = test_images
    model = copy.deepcopy(trained("examples")).train()
    model.fc3.eval()
    before = _modes(model)
    app = vs.explore(model, images=x.numpy(), labels=y.numpy(), device="cpu", **QUIET)
    try:
        assert not any(_modes(model))  # served in eval mode, as the docstring says
    finally:
        app.close()
    assert _modes(model) == before


# -- D: notebooks ---------------------------------------------------------------------------------------
@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keywords each launch of the explorer got."""
    from vaescope.explorer.ui import app as app_module

    seen: list[dict] = []
    original = app_module.ExplorerBlocks.launch

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(dict(kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(app_module.ExplorerBlocks, "launch", spy)
    return seen


def test_in_a_notebook_the_explorer_is_a_link_not_a_small_iframe(test_images, monkeypatch, launches, capsys) -> None:
    x, _ = test_images
    monkeypatch.setattr(vaescope, "_in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "IPython", None)  # no IPython here: the link is printed
    app = vs.explore(trained("examples"), images=x.numpy(), device="cpu", server_port=free_port(), quiet=True)
    try:
        assert launches[-1]["inline"] is False and launches[-1]["prevent_thread_lock"] is True
        assert "inbrowser" not in launches[-1]
        out = capsys.readouterr().out
        assert f"The vaescope explorer is running at {app.local_url} : open it in a new tab" in out
        assert "Pass inline=True to show it in the notebook" in out
    finally:
        app.close()


@pytest.mark.slow
def test_in_a_notebook_the_link_is_html_and_inline_true_gets_a_page_high_frame(test_images, monkeypatch,
                                                                               launches) -> None:
    x, _ = test_images
    shown: list[object] = []
    display_module = types.ModuleType("IPython.display")
    display_module.HTML = lambda html: ("HTML", html)  # type: ignore[attr-defined]
    display_module.display = shown.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setattr(vaescope, "_in_notebook", lambda: True)
    monkeypatch.setattr(vaescope, "_in_notebook", lambda: True)
    app = vs.explore(trained("examples"), images=x.numpy(), device="cpu", server_port=free_port(), quiet=True)
    try:
        assert shown and f'<a href="{app.local_url}" target="_blank"' in shown[-1][1]
    finally:
        app.close()
    shown.clear()
    app = vs.explore(trained("examples"), images=x.numpy(), device="cpu", server_port=free_port(), quiet=True,
                     inline=True)
    try:
        assert launches[-1]["inline"] is True and launches[-1]["height"] == vaescope.EXPLORE_HEIGHT
        assert not any(isinstance(s, tuple) and "vaescope explorer is running" in s[1] for s in shown)
    finally:
        app.close()


# -- E: class-conditional models of one's own ------------------------------------------------------------
@pytest.mark.parametrize("style, expected", [("antixk-cvae", ("concat", "image", "symmetric", "tanh")),
                                             ("index-cvae", ("index", "image", "unit", "pixels")),
                                             ("onehot-cvae", ("onehot", "flat", "unit", "pixels"))])
def test_a_conditional_model_is_read_with_the_class_the_way_it_takes_it(style: str, expected: tuple, test_images) -> None:
    x, y = test_images
    model = adapt(trained_more(style), x, labels=y, condition="class", classes=10, class_names=CLASSES)
    r = model.reading
    assert (r.condition_format, r.input_shape, r.input_range, r.output) == expected
    assert model.describe().condition == Condition("class", 10) and "conditional VAE" in model.describe().title
    # the class changes what is decoded: a code decoded as each class gives ten different images
    z = model.encode(x[:1], y[:1]).mean
    decoded = model.decode(z.repeat(10, 1), torch.arange(10))
    assert float(torch.cdist(decoded.flatten(1), decoded.flatten(1)).masked_fill(torch.eye(10, dtype=bool), 1).min()) > 0.05


def test_antixks_conditional_vae_is_encoded_and_decoded_as_its_forward_does(test_images) -> None:
    x, y = test_images
    cvae = trained_more("antixk-cvae")
    model = adapt(cvae, x, labels=y, condition="class", classes=10)
    onehot = F.one_hot(y[:16], 10).float()
    with torch.no_grad():
        _, _, mu, log_var = cvae(2 * x[:16] - 1, labels=onehot)
        own = (cvae.decode(torch.cat([mu, onehot], 1)) + 1) / 2
    post = model.encode(x[:16], y[:16])
    torch.testing.assert_close(post.mean, mu)
    torch.testing.assert_close(post.logvar, log_var.clamp(-30, 20))
    torch.testing.assert_close(model.decode(post.mean, y[:16]), own.clamp(0, 1))


def test_class_sampling_decodes_with_the_class_chosen(test_images) -> None:
    """Through vs.explore's store and the explorer's own sampler: codes from the prior decoded with
    class c look like the digit c (the nearest class-mean image), for most of the draws."""
    x, y = test_images
    store, name = vaescope._store_for(trained_more("antixk-cvae"), x.numpy(), y.numpy(), CLASSES, latents=None,
                                      name="cvae", device=torch.device("cpu"),
                                      adapter_options={"condition": "class", "classes": 10})
    entry = store.open_name(name)
    assert entry.description.condition == Condition("class", 10) and entry.has_points
    means = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)
    hits = 0
    for c in range(10):
        images, how = sample_class(entry, c, 20, seed=0, temperature=1.0)
        assert "decoded with the class label" in how.note and images.shape == (20, 1, 8, 8)
        nearest = torch.cdist(torch.as_tensor(images).float().flatten(1), means).argmin(1)
        hits += int((nearest == c).sum())
    assert hits / 200 > 0.7


def test_a_conditional_model_is_exported_with_its_class(tmp_path: Path, test_images) -> None:
    from vaescope.bundle import load_bundle

    x, y = test_images
    cvae = trained_more("index-cvae")
    path = vs.export(cvae, tmp_path / "cvae.safetensors", images=x, labels=y, class_names=CLASSES, condition="class",
                     classes=10)
    bundle, _, _ = load_bundle(path)
    adapted = adapt(cvae, x, labels=y, condition="class", classes=10)
    assert bundle.describe().condition == Condition("class", 10)
    z = adapted.encode(x[:8], y[:8]).mean
    for c in (0, 7):
        label = torch.full((8,), c)
        torch.testing.assert_close(bundle.decode(z, label), adapted.decode(z, label), atol=1e-4, rtol=0)


def test_a_conditional_model_without_the_keyword_is_told_what_to_pass(test_images) -> None:
    x, y = test_images
    with pytest.raises(AdapterError, match=r"It looks class-conditional \(it has embed_class, as AntixK's "
                                           r"ConditionalVAE has\): pass condition='class' and classes=K"):
        adapt(AntixKConditionalVAE(), x)
    with pytest.raises(AdapterError, match=r"It looks class-conditional \(its encode and decode take a second "
                                           r"argument\)"):
        adapt(trained_more("index-cvae"), x)


def test_when_both_ways_run_and_disagree_the_adapter_asks_for_condition_format(test_images) -> None:
    x, y = test_images

    class Either(nn.Module):
        """Takes any class tensor; index and one-hot give different inputs."""

        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = nn.Linear(65, 4), nn.Linear(5, 64)

        def encode(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return self.enc(torch.cat([x.flatten(1), c.float().reshape(len(x), -1)[:, -1:]], 1))

        def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.dec(torch.cat([z, c.float().reshape(len(z), -1)[:, -1:]], 1)))

    with pytest.raises(AdapterError, match=r"the results differ, so the evidence cannot tell how it takes the "
                                           r"class. Say which: condition_format='index' or condition_format='onehot'"):
        adapt(Either(), x, labels=y, condition="class", classes=10, output="pixels", input_range="unit")
    model = adapt(Either(), x, labels=y, condition="class", classes=10, condition_format="onehot", output="pixels",
                  input_range="unit")
    assert model.reading.condition_format == "onehot"


@pytest.mark.parametrize("keywords, message", [
    ({"condition": "class", "classes": 0}, r"^condition='class' needs the number of classes the model takes, classes=K"),
    ({"condition": "class", "classes": 5}, r"^labels go up to 9 but the model takes 5 classes \(classes=5\)"),
    ({"classes": 10}, r"^classes= and condition_format= go with condition='class'"),
    ({"condition": "component"}, r"^condition must be one of \('none', 'class'\)"),
    ({"condition": "class", "condition_format": "embedding"}, r"^condition_format must be 'auto' or one of"),
])
def test_condition_keywords_that_cannot_work_are_refused_in_one_sentence(keywords: dict, message: str,
                                                                         test_images) -> None:
    x, y = test_images
    with pytest.raises(AdapterError, match=message):
        adapt(trained_more("index-cvae"), x, labels=y, **keywords)


@pytest.mark.parametrize("style", CONDITIONAL)
def test_the_conditional_look_alikes_really_use_the_class(style: str, test_images) -> None:
    """The look-alikes are real CVAEs: decoding prior codes with class c gives the digit c (nearest class mean)."""
    x, y = test_images
    model = adapt(trained_more(style), x, labels=y, condition="class", classes=10)
    means = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)
    z = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    hits = sum(int((torch.cdist(model.decode(z, torch.full((30,), c)).flatten(1), means).argmin(1) == c).sum())
               for c in range(10))
    assert hits / 300 > 0.7


# -- F: embeddings files ---------------------------------------------------------------------------------
def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes whose first value is the row number, and labels row % 3."""
    codes = np.zeros((n, 2), np.float32)
    codes[:, 0] = np.arange(n)
    return codes, np.arange(n) % 3


def test_parquet_class_names_come_from_the_schema_metadata(tmp_path: Path) -> None:
    codes, labels = _rows(9)
    table = pa.table({"vector": pa.array(codes.tolist(), pa.list_(pa.float32())), "label": labels})
    pq.write_table(table.replace_schema_metadata({"class_names": json.dumps(["zebra", "ant", "moth"])}),
                   tmp_path / "ints.parquet")
    read = read_embeddings(tmp_path / "ints.parquet")
    assert read.class_names == ("zebra", "ant", "moth") and (read.labels == labels).all()
    words = np.array(["zebra", "ant", "moth"])[labels]
    table = pa.table({"vector": pa.array(codes.tolist(), pa.list_(pa.float32())), "label": words})
    pq.write_table(table.replace_schema_metadata({"class_names": json.dumps(["zebra", "ant", "moth"])}),
                   tmp_path / "words.parquet")
    read = read_embeddings(tmp_path / "words.parquet")
    assert read.class_names == ("zebra", "ant", "moth") and (read.labels == labels).all()  # not sorted
    pq.write_table(table.replace_schema_metadata({"class_names": "zebra"}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"^bad.parquet: its class_names metadata must be a JSON list of strings, "
                                         r"class 0 first$"):
        read_embeddings(tmp_path / "bad.parquet")


def test_parquet_class_names_come_from_a_class_name_column(tmp_path: Path) -> None:
    codes, labels = _rows(9)
    names = np.array(["zebra", "ant", "moth"])[labels]
    vectors = pa.array(codes.tolist(), pa.list_(pa.float32()))
    pq.write_table(pa.table({"vector": vectors, "label": labels, "class_name": names}), tmp_path / "pairs.parquet")
    read = read_embeddings(tmp_path / "pairs.parquet")
    assert read.class_names == ("zebra", "ant", "moth") and (read.labels == labels).all()
    pq.write_table(pa.table({"vector": vectors, "class_name": names}), tmp_path / "alone.parquet")
    read = read_embeddings(tmp_path / "alone.parquet")
    assert read.class_names == ("ant", "moth", "zebra") and [read.class_names[i] for i in read.labels] == names.tolist()
    clash = names.copy()
    clash[3] = "wasp"
    pq.write_table(pa.table({"vector": vectors, "label": labels, "class_name": clash}), tmp_path / "clash.parquet")
    with pytest.raises(InputError, match=r"^clash.parquet: label 0 is named both 'zebra' and 'wasp' in the "
                                         r"class_name column; give each label one name$"):
        read_embeddings(tmp_path / "clash.parquet")


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files over 40 points are read as a seeded subset of 40, up to 1,000; blocks of a few rows."""
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_POINTS", 40)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_FILE_ROWS", 1000)
    monkeypatch.setattr(embeddings, "CHUNK_BYTES", 256)


def test_a_parquet_file_over_the_points_is_read_as_a_seeded_subset(tmp_path: Path, small_limits) -> None:
    from PIL import Image

    codes, labels = _rows(300)
    pngs = []
    for i in range(300):
        buffer = __import__("io").BytesIO()
        Image.fromarray(np.full((4, 4), i % 256, np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    words = np.array(["a", "b", "c"])[labels]
    pq.write_table(pa.table({"vector": pa.array(codes.tolist(), pa.list_(pa.float32())), "label": words,
                             "image": pa.array(pngs, pa.binary())}), tmp_path / "big.parquet", row_group_size=64)
    read = read_embeddings(tmp_path / "big.parquet")
    rows = seeded_rows(300, 40)
    assert len(read.latents) == 40 and (read.latents[:, 0] == rows).all()
    assert [read.class_names[i] for i in read.labels] == words[rows].tolist()
    assert (read.images[:, 0, 0, 0] == rows % 256).all()
    assert read.origin == "a seeded subset (seed 0) of 40 of the 300 rows of big.parquet (files over 40 rows are read so)"
    pq.write_table(pa.table({"vector": pa.array(_rows(1001)[0].tolist(), pa.list_(pa.float32()))}),
                   tmp_path / "huge.parquet")
    with pytest.raises(InputError, match=r"^huge.parquet: 1,001 rows; between 1 and 1,000 are read$"):
        read_embeddings(tmp_path / "huge.parquet")


def test_an_npz_file_over_the_points_is_read_as_a_seeded_subset(tmp_path: Path, small_limits) -> None:
    codes, labels = _rows(300)
    images = np.broadcast_to((np.arange(300) % 256).astype(np.uint8)[:, None, None, None], (300, 1, 4, 4))
    np.savez(tmp_path / "big.npz", latents=codes, labels=labels, images=np.ascontiguousarray(images),
             class_names=np.array(["a", "b", "c"]))
    read = read_embeddings(tmp_path / "big.npz")
    rows = seeded_rows(300, 40)
    assert (read.latents[:, 0] == rows).all() and (read.labels == labels[rows]).all()
    assert (read.images[:, 0, 0, 0] == rows % 256).all() and read.class_names == ("a", "b", "c")
    assert read.origin == ("a seeded subset (seed 0) of 40 of the 300 points of big.npz (files over 40 points are "
                           "read so)")


def test_the_seeded_subset_is_uniform_and_costs_memory_for_the_rows_kept_only() -> None:
    rows = seeded_rows(1000, 100, block=64)
    assert len(set(rows.tolist())) == 100 and (np.diff(rows) > 0).all() and rows.max() < 1000
    assert (seeded_rows(1000, 100, block=64) == rows).all()  # seeded
    counts = np.zeros(10)
    for seed in range(400):  # every row equally likely: each tenth of the rows gets a tenth of the draws
        np.add.at(counts, seeded_rows(1000, 100, seed=seed, block=64) // 100, 1)
    assert np.allclose(counts / counts.sum(), 0.1, atol=0.01)


def test_codes_given_to_vs_explore_over_the_points_keep_their_images_and_labels(monkeypatch) -> None:
    import vaescope.limits

    monkeypatch.setattr(vaescope.limits, "MAX_EMBEDDING_POINTS", 40)
    codes, labels = _rows(300)
    images = np.broadcast_to((np.arange(300) % 256).astype(np.uint8)[:, None, None, None], (300, 1, 4, 4)).copy()
    table = vaescope._codes_table(codes, images, labels, ["a", "b", "c"])
    rows = subset_rows(300, 40)
    assert (table.latents[:, 0] == rows).all() and (table.labels == labels[rows]).all()
    assert (table.images[:, 0, 0, 0] == rows % 256).all()
    assert table.origin == "a seeded subset (seed 0) of 40 of the 300 codes given to vs.explore"


def test_nothing_above_warns_needlessly(test_images) -> None:
    """A plain call (fewer images than the map holds, integer labels) warns about nothing."""
    x, y = test_images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vaescope._as_model(trained("examples"), x.numpy(), y.numpy(), CLASSES, device="cpu", name=None, options={})
