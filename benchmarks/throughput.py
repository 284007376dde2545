"""Figure 4: training throughput (images/s) of the 16-d conv VAE and GMVAE on 28x28 images.

A step is what ``vaescope.training.train`` does per batch: forward with the loss, backward, Adam. Batches
of 128 are drawn from Fashion-MNIST (random pixels if it cannot be read). The timed steps are cut
into chunks, the two models taking turns, and the figure is the median chunk's images/s. On CUDA
the data lives on the device and the forward runs under bf16 autocast, as in training; without a
GPU that part is skipped and the output says so. Each model is also timed compiled
(``latent-train --compile``: torch.compile of the step's forward and loss) against its eager run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import FMNIST_CONV, Figure, Row, median

BATCH = 128
MODELS = ("vae", "gmvae")
VARIANTS = [(m, compiled) for compiled in (False, True) for m in MODELS]  # (model, torch.compile)


def batches(device: Any) -> tuple[Any, str]:
    """uint8 images [N, 1, 28, 28] on ``device`` and where they came from."""
    import torch

    try:
        from vaescope.training.data import load_dataset

        return load_dataset("fashion-mnist", image_size=28).train.images.to(device), "Fashion-MNIST train"
    except Exception as exc:  # any failure to read the data: random pixels cost the same to train on
        images = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8, device=device)
        return images, f"random pixels (Fashion-MNIST unavailable: {exc})"


def trainer(model_type: str, images: Any, device: Any, compiled: bool = False) -> Callable[[], None]:
    """A function doing one training step of a fresh ``model_type`` model on a random batch of
    ``images`` (uint8 [N, 1, 28, 28], on ``device``), through torch.compile if ``compiled``."""
    import torch

    from vaescope.training.config import ModelConfig
    from vaescope.training.models import build_model

    torch.manual_seed(0)
    extra = {"options": {"components": 10}} if model_type == "gmvae" else {}
    model = build_model(ModelConfig(model_type=model_type, **FMNIST_CONV, **extra)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=images.device).manual_seed(0)
    net = torch.compile(model) if compiled else model

    def step() -> None:
        x = images[torch.randint(len(images), (BATCH,), generator=gen, device=images.device)].float().div_(255)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net(x, None, kl_weight=1.0, temperature=0.5)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
    return step


def images_per_second(step: Callable[[], None], steps: int, device: Any) -> float:
    """Images/s over ``steps`` calls of ``step`` (synchronised on CUDA)."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def run(quick: bool) -> Figure:
    """Figure 4 rows: images/s per model on CPU (and CUDA when present); GMVAE vs VAE as baseline."""
    import torch

    chunks, steps, warmup = (3, 10, 3) if quick else (5, 60, 10)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("training throughput: no GPU available (torch.cuda.is_available() is False); CPU only")
    rows: list[Row] = []
    details: dict[str, Any] = {"batch": BATCH, "steps_per_chunk": steps, "warmup_steps": warmup,
                               "gpu": torch.cuda.get_device_name(0) if len(devices) > 1 else "no GPU available",
                               "torch_threads": torch.get_num_threads()}
    for device in devices:
        images, source = batches(device)
        steppers = {(m, compiled): trainer(m, images, device, compiled) for m, compiled in VARIANTS}
        compile_s = {}
        for (m, compiled), step in steppers.items():
            start = time.perf_counter()
            images_per_second(step, warmup, device)  # untimed warm-up (compiling, for the compiled ones)
            if compiled:
                compile_s[m] = time.perf_counter() - start
        rates: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
        for _ in range(chunks):  # variants take turns, so background load hits all alike
            for variant, step in steppers.items():
                rates[variant].append(images_per_second(step, steps, device))
        details[device.type] = {"data": source, "compile_and_warmup_s": compile_s,
                                "images_per_s": {f"{m}{'_compiled' if c else ''}": r for (m, c), r in rates.items()}}
        where = "CPU" if device.type == "cpu" else f"CUDA, bf16 autocast, {torch.cuda.get_device_name(0)}"
        vae, gmvae = median(rates["vae", False]), median(rates["gmvae", False])
        rows.append(Row(f"train VAE, 28x28 conv ({where})", vae, "img/s", chunks))
        rows.append(Row(f"train GMVAE, 28x28 conv ({where})", gmvae, "img/s", chunks, vae, "VAE, same run"))
        for m, eager in (("vae", vae), ("gmvae", gmvae)):
            rows.append(Row(f"train {m.upper()}, 28x28 conv, torch.compile ({where})", median(rates[m, True]), "img/s",
                            chunks, eager, "eager, same run", note=f"compiling + warm-up {compile_s[m]:.0f} s"))
    if len(devices) == 1:
        rows.append(Row("train VAE / GMVAE on GPU", None, "img/s", 0, note="no GPU available"))
    return Figure(rows, details)
