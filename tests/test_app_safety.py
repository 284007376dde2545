"""Reliability and safety of the served explorer, driven with gradio_client on 127.0.0.1.

Bad checkpoints of every kind give a specific warning and the app keeps serving; names that lead
outside the checkpoint folder are refused; uploads of any image mode are converted and the cap on
upload size is stated and enforced; the command line binds loopback unless told otherwise and
warns when it is; identical long jobs run once; many clients sent the same picture each download
it whole; and 16 clients for a minute see no errors while the server's memory stays flat
(``slow``; VAESCOPE_SOAK_SECONDS shortens it).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import StatusUpdate
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from serving import api_client, latent_explore, serving

from vaescope.explorer.core import projection
from vaescope.explorer.core.locks import KeyedLocks
from vaescope.explorer.ui.app import build_app, main
from vaescope.explorer.ui.state import Session

VAE = "tiny-vae.safetensors"
GOOD = ["tiny-ae.safetensors", "tiny-gmvae.safetensors", VAE]
UPLOAD_CAP_MB = 1  # the safety server's cap: every upload below is far smaller, but one
OUTSIDE = "outside.safetensors"  # a good checkpoint next to (not inside) the served folder
ESCAPE = "escape.safetensors"  # a symlink in the served folder to OUTSIDE
MARKER = "pickle-ran"  # the pickle payload creates this file if anything ever unpickles it


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (self.target, "w"))


def _rewrite(src: Path, dest: Path, edit: Callable[[dict, dict], None]) -> None:
    """Copy a checkpoint with its metadata JSON and tensors changed by ``edit(meta, tensors)``."""
    with safe_open(str(src), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(fh.metadata()["vaescope"])
    edit(meta, tensors)
    save_file(tensors, str(dest), metadata={"vaescope": json.dumps(meta)})


def _write_bad(kind: str, good: Path, dest: Path) -> None:
    """One bad checkpoint of ``kind`` at ``dest`` (crafted as in tests/test_checkpoint.py)."""
    data = good.read_bytes()
    if kind == "truncated":
        dest.write_bytes(data[: len(data) // 2])
    elif kind == "random-bytes":
        dest.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        dest.write_bytes(b"")
    elif kind == "no-metadata":
        save_file({"w": torch.zeros(2)}, str(dest))
    elif kind == "future-version":
        _rewrite(good, dest, lambda meta, t: meta.update(format_version=99))
    elif kind == "shape-mismatch":
        _rewrite(good, dest, lambda meta, t: meta["model_config"].update(latent_dim=5))
    elif kind in ("pickle", "pickle-renamed"):
        dest.write_bytes(pickle.dumps({"state_dict": _Payload(str(dest.parent / MARKER))}))
    else:
        raise ValueError(kind)


# kind -> (file name in the served folder, what the warning must say)
BAD = {
    "truncated": ("bad-truncated.safetensors", "truncated or corrupt"),
    "random-bytes": ("bad-noise.safetensors", "truncated or corrupt"),
    "no-metadata": ("bad-foreign.safetensors", "without vaescope metadata"),
    "future-version": ("bad-future.safetensors", "format_version 99 is not supported"),
    "shape-mismatch": ("bad-shapes.safetensors", r"has shape \[.*\] but the config needs"),
    "empty": ("bad-empty.safetensors", r"empty \(0 bytes\)"),
    "pickle-renamed": ("bad-pickle.safetensors", "truncated or corrupt"),  # parsed as safetensors, never run
    "pickle": ("bad-pickle.pt", "pickles.*never opens them"),
}



@pytest.fixture(scope="module")
def app_root(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good checkpoints, one bad file of every kind, and a symlink to a checkpoint outside."""
    root = tmp_path_factory.mktemp("safety") / "served"
    root.mkdir()
    for name in GOOD:
        shutil.copy(tiny_checkpoint_dir / name, root / name)
    for kind, (name, _) in BAD.items():
        _write_bad(kind, root / VAE, root / name)
    shutil.copy(tiny_checkpoint_dir / VAE, root.parent / OUTSIDE)
    (root / ESCAPE).symlink_to(root.parent / OUTSIDE)
    return root


@pytest.fixture(scope="module")
def server(app_root: Path) -> Iterator[str]:
    demo = build_app(app_root, device="cpu", default_checkpoint=VAE, max_upload_mb=UPLOAD_CAP_MB)
    with serving(demo) as url:
        yield url


@pytest.fixture
def client(server: str) -> Client:
    return Client(server, verbose=False, download_files=True)


def call(client: Client, *args: Any, api_name: str) -> tuple[Any, list[tuple[str, str]]]:
    """predict, plus the (message, level) of each gr.Warning / gr.Info the call raised."""
    job = client.submit(*args, api_name=api_name)
    out = job.result(timeout=120)
    updates, logs = job.communicator.updates, []
    while not updates.empty():
        update = updates.get_nowait()
        if isinstance(update, StatusUpdate) and update.log:
            logs.append(update.log)
    return out, logs


def texts(outputs: Any) -> list[str]:
    return [o for o in (outputs if isinstance(outputs, tuple | list) else [outputs]) if isinstance(o, str)]


def card(client: Client, name: str = VAE) -> str:
    """Load ``name`` and return its model card (asserting there is one)."""
    cards = [t for t in texts(client.predict(name, api_name="/load_checkpoint")) if "latent dim" in t]
    assert cards, f"{name} did not load"
    return cards[0]


def assert_refused(client: Client, pattern: str, *args: Any, api_name: str = "/load_checkpoint") -> None:
    """The call warns once with ``pattern``, and the model already open keeps working."""
    card(client, VAE)
    out, logs = call(client, *args, api_name=api_name)
    warnings = [msg for msg, level in logs if level == "warning"]
    assert len(warnings) == 1, logs
    assert re.search(pattern, warnings[0]) and "Cannot load" in warnings[0], warnings[0]
    assert client.predict(1.0, api_name="/slider_0")  # the model in use still answers
    assert "GMVAE" in card(client, "tiny-gmvae.safetensors")  # and the other checkpoints still load


def direct_load(root: Path, name: str) -> str:
    """The model panel's load handler without Gradio in front (beneath its own input checks): the
    note it writes under the card."""
    models = build_app(root, device="cpu", default_checkpoint=VAE).panels["models"]
    return models.load_checkpoint(name, Session())[models.note]


# -- bad checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [k for k in BAD if k != "pickle"])
def test_every_kind_of_bad_checkpoint_warns_specifically(client: Client, app_root: Path, kind: str) -> None:
    name, pattern = BAD[kind]
    assert_refused(client, re.escape(name) + ".*" + pattern, name)  # picked in the dropdown
    assert_refused(client, re.escape(name) + ".*" + pattern, handle_file(str(app_root / name)),
                   api_name="/upload_checkpoint")  # or uploaded


def test_a_pickle_is_refused_and_never_run(client: Client, app_root: Path) -> None:
    name, pattern = BAD["pickle"]
    with pytest.raises(AppError, match=r"Invalid file type.*\.safetensors"):  # Gradio checks the suffix
        client.predict(handle_file(str(app_root / name)), api_name="/upload_checkpoint")
    with pytest.raises(AppError, match="not in the list of choices"):  # never listed, so never offered
        client.predict(name, api_name="/load_checkpoint")
    with pytest.warns(UserWarning, match=pattern):  # and refused by name beneath Gradio's check too
        direct_load(app_root, name)
    assert client.predict(1.0, api_name="/slider_0")
    assert not (app_root / MARKER).exists()


# -- paths ---------------------------------------------------------------------------------------
def test_the_dropdown_lists_only_files_inside_the_folder(client: Client) -> None:
    update = client.predict(None, api_name="/list_checkpoints")
    names = [c[0] if isinstance(c, list | tuple) else c for c in update["choices"]]
    assert set(GOOD) <= set(names) and ESCAPE not in names and OUTSIDE not in names
    assert "bad-pickle.pt" not in names  # only .safetensors are listed


@pytest.mark.parametrize("name, pattern", [
    ("../" + OUTSIDE, "'..' is refused"),
    ("sub/../../" + OUTSIDE, "'..' is refused"),
    ("<absolute>", "absolute paths are refused"),
    (ESCAPE, "outside the checkpoint folder"),
])
def test_names_leading_out_of_the_folder_are_refused(client: Client, app_root: Path, name: str,
                                                     pattern: str) -> None:
    """Twice over: Gradio accepts only the listed names, and the handler refuses the path itself."""
    assert (app_root.parent / OUTSIDE).is_file()  # the target exists: refused for where it is, not absence
    if name == "<absolute>":
        name = str(app_root.parent / OUTSIDE)
    card(client, VAE)
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(name, api_name="/load_checkpoint")
    assert client.predict(1.0, api_name="/slider_0")  # the session is unharmed
    with pytest.warns(UserWarning, match=pattern):
        note = direct_load(app_root, name)
    assert pattern in note  # the note under the card says it too


# -- uploads -------------------------------------------------------------------------------------
def _image(mode: str, size: tuple[int, int]) -> Image.Image:
    """A bright square on a dark ground (the digits' look), in ``mode``."""
    grey = Image.new("L", size, 0)
    w, h = size
    grey.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    if mode == "I;16":
        return Image.fromarray(np.asarray(grey, np.uint16) * 257)
    return grey if mode == "L" else grey.convert(mode)


@pytest.mark.parametrize("mode, size, said", [
    ("L", (8, 8), []),
    ("RGB", (28, 28), ["converted to greyscale", "resized 28x28 -> 8x8"]),
    ("RGBA", (40, 30), ["converted to greyscale", "padded", "resized"]),
    ("P", (5, 3), ["converted to greyscale", "padded", "resized"]),
    ("I;16", (64, 64), ["rescaled to 8 bits", "resized 64x64 -> 8x8"]),
])
def test_uploaded_images_of_any_mode_and_size_are_converted_and_explained(
        client: Client, tmp_path: Path, mode: str, size: tuple[int, int], said: list[str]) -> None:
    path = tmp_path / f"in-{mode.replace(';', '')}.png"
    _image(mode, size).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    card(client, VAE)
    out, logs = call(client, handle_file(str(path)), None, api_name="/traverse_upload")
    info = next(t for t in texts(out) if path.name in t)
    infos = [m for m, level in logs if level == "info"]
    for words in said:
        assert words in info and any(words in m for m in infos), (info, infos)
    if not said:
        assert info.endswith(path.name) and not infos  # nothing was changed, nothing is said


def test_upload_cap_is_stated_and_enforced(client: Client, tmp_path: Path) -> None:
    stated = [c["props"].get("value") for c in client.config["components"]
              if c["props"].get("elem_id") == "upload-cap"]
    assert stated and f"up to {UPLOAD_CAP_MB} MB per file" in str(stated[0])
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (UPLOAD_CAP_MB * 2**20 + 1024))
    with pytest.raises(Exception, match="(?i)size"):
        client.predict(handle_file(str(big)), api_name="/upload_checkpoint")
    assert "latent dim" in card(client, VAE)  # the server is fine afterwards


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What main() hands gr.Blocks.launch (replaced: nothing is served), and torch's thread count."""
    seen: dict[str, Any] = {}

    def fake_launch(self: gr.Blocks, **kwargs: Any) -> None:
        seen.update(kwargs, blocks=self)

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.__setitem__("torch_threads", n))
    return seen


def test_main_binds_loopback_with_the_stated_upload_cap(launched: dict[str, Any], app_root: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    main(["--checkpoints", str(app_root), "--device", "cpu", "--no-disk-cache", "--max-upload-mb", "7"])
    assert launched["server_name"] == "127.0.0.1" and launched["share"] is False
    assert launched["max_file_size"] == "7mb"  # Gradio refuses larger uploads
    cap = [b for b in launched["blocks"].blocks.values() if getattr(b, "elem_id", None) == "upload-cap"]
    assert "up to 7 MB per file" in cap[0].value
    assert launched["css"] and "plotly_click" in launched["head"]  # the click bridge comes with it
    assert launched["torch_threads"] == 1  # see app.DEFAULT_TORCH_THREADS
    assert "WARNING" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, where", [
    (["--share"], "a public share link"),
    (["--host", "0.0.0.0"], "0.0.0.0"),
    (["--host", "192.168.1.5", "--share"], "a public share link"),
])
def test_main_warns_when_others_can_reach_it(launched: dict[str, Any], app_root: Path, argv: list[str],
                                            where: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--checkpoints", str(app_root), "--device", "cpu", "--no-disk-cache", *argv])
    err = capsys.readouterr().err
    assert f"WARNING: serving on {where}" in err and "no login" in err
    assert launched["share"] is ("--share" in argv)
    assert launched["server_name"] == (argv[1] if argv[0] == "--host" else "127.0.0.1")


def test_main_torch_threads_and_bad_numbers(launched: dict[str, Any], app_root: Path) -> None:
    main(["--checkpoints", str(app_root), "--device", "cpu", "--no-disk-cache", "--torch-threads", "3"])
    assert launched["torch_threads"] == 3
    for flag in ("--torch-threads", "--max-upload-mb"):
        with pytest.raises(SystemExit, match="at least 1"):
            main(["--checkpoints", str(app_root), "--device", "cpu", flag, "0"])


# -- long jobs -----------------------------------------------------------------------------------
def test_two_tsne_requests_for_one_checkpoint_fit_once(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second request arrives while the first fit runs, waits, and gets the same result."""
    fits: list[tuple[float, float]] = []
    waits: list[float] = []
    real_fit, real_hold = projection.fit_projection, KeyedLocks.hold

    def counted_fit(*args: Any, **kwargs: Any) -> projection.Projection:
        start = time.monotonic()
        time.sleep(1.5)  # hold the fit open long enough for the second request to arrive
        result = real_fit(*args, **kwargs)
        fits.append((start, time.monotonic()))
        return result

    def hold(self: KeyedLocks, key: Any) -> Any:
        if isinstance(key, tuple) and len(key) > 1 and key[1] == "tsne":  # a map request; (checkpoint,) is
            waits.append(time.monotonic())                                # the per-checkpoint long-job lock
        return real_hold(self, key)

    monkeypatch.setattr(projection, "fit_projection", counted_fit)
    monkeypatch.setattr(KeyedLocks, "hold", hold)
    users = [Client(server, verbose=False) for _ in range(2)]
    for user in users:
        card(user, "tiny-ae.safetensors")
    with ThreadPoolExecutor(2) as pool:
        maps = list(pool.map(lambda u: u.predict("tsne", 2, "class", "none", 170, api_name="/draw_map"), users))
    assert len(fits) == 1, "t-SNE was fitted more than once for one checkpoint and request"
    assert len(waits) == 2 and max(waits) < fits[0][1], "the second request did not arrive during the fit"
    assert all("170 of 300" in info for _, info, *_ in maps)
    assert maps[0][0] == maps[1][0]  # the same figure for both


@pytest.mark.slow
def test_many_clients_download_identical_images_whole(server: str) -> None:
    """Every session shows the same picture at the same slider value; each download is complete.

    Gradio caches an output image under the hash of its bytes and rewrites that file in place, so
    without a per-response tag one client's download could race another's rewrite (truncated body).
    """
    def user(k: int) -> list[str]:
        c, problems = Client(server, verbose=False, download_files=True), []
        card(c, VAE)
        for _ in range(12):
            try:
                path = c.predict(1.0, api_name="/slider_0")
                path = path[0] if isinstance(path, tuple | list) else path
                with Image.open(path) as im:
                    im.load()
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                problems.append(repr(exc))
        return problems

    with ThreadPoolExecutor(8) as pool:
        problems = [p for found in pool.map(user, range(8)) for p in found]
    assert not problems, f"{len(problems)} of 96 downloads failed, e.g. {problems[:2]}"


# -- many clients --------------------------------------------------------------------------------
SOAK_CLIENTS = 16


def _rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def served_process(tiny_checkpoint_dir: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m vaescope.explorer` (latent-explore) on the tiny checkpoints, in its own process."""
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "TMPDIR": str(tmp_path)}
    with latent_explore(tiny_checkpoint_dir, tmp_path, env, args=("--default", VAE)) as (url, _, proc):
        yield url, proc


def _soak_user(url: str, k: int, stop: threading.Event, errors: list[str], counts: list[int],
               downloads: Path) -> None:
    """One session: load a model, then move a slider until ``stop``; every 25th call samples.
    Like a browser, it downloads every image it is sent."""
    try:
        c = api_client(url, download_files=str(downloads / str(k)))
    except Exception as exc:  # noqa: BLE001 - every failure is an error the test reports
        errors.append(f"client {k} setup: {exc!r}")
        return
    try:
        c.predict(GOOD[k % len(GOOD)], api_name="/load_checkpoint")
    except Exception as exc:  # noqa: BLE001 - every failure is an error the test reports
        errors.append(f"client {k} setup: {exc!r}")
        return
    rng = np.random.default_rng(k)
    for i in range(100_000):  # bounded; ``stop`` ends it long before
        if stop.is_set():
            return
        try:
            if i % 25 == 24:
                out = c.predict(None, api_name="/traverse_random")
            else:
                out = c.predict(float(rng.uniform(-3, 3)), api_name=f"/slider_{k % 4}")
            if not out:
                errors.append(f"client {k} call {i}: empty answer")
            counts[k] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"client {k} call {i}: {exc!r}")


@pytest.mark.slow
def test_16_clients_for_a_minute_get_every_answer_and_memory_stays_flat(
        served_process: tuple[str, subprocess.Popen], tmp_path: Path) -> None:
    url, proc = served_process
    seconds = float(os.environ.get("VAESCOPE_SOAK_SECONDS", "60"))
    warmup = max(5.0, seconds / 6)
    stop, errors, counts = threading.Event(), [], [0] * SOAK_CLIENTS
    threads = [threading.Thread(target=_soak_user, args=(url, k, stop, errors, counts, tmp_path / "downloads"),
                                daemon=True)
               for k in range(SOAK_CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    before, served_before = _rss_mb(proc.pid), sum(counts)
    time.sleep(seconds)
    after, served = _rss_mb(proc.pid), sum(counts) - served_before
    stop.set()
    for t in threads:
        t.join(timeout=60)
    summary = (f"{SOAK_CLIENTS} clients, {seconds:.0f} s after a {warmup:.0f} s warm-up: {served} answers, "
               f"{len(errors)} errors; server RSS {before:.0f} MB before, {after:.0f} MB after")
    assert not any(t.is_alive() for t in threads), summary
    assert not errors, f"{summary}; first errors: {errors[:3]}"
    assert served >= SOAK_CLIENTS, summary
    assert all(counts), f"{summary}; a client got no answer at all: {counts}"
    assert after - before < 150, summary
