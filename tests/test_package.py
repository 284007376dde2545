"""The installed package: one import name, ``vaescope``; nothing generic at the top of site-packages."""

from __future__ import annotations

import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline with the setuptools in this environment."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("vaescope-*.whl")
    return found


def test_the_wheel_installs_only_vaescope_at_the_top_level(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"vaescope"}
    assert "vaescope/training/train.py" in names and "vaescope/explorer/ui/app.py" in names
    assert "vaescope/explorer/ui/static/bridge.js" in names  # the page script ships with the package
    assert not any(n.startswith(("training/", "explorer/", "benchmarks/", "tests/")) for n in names)


def test_the_commands_keep_their_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(info).decode()
    assert "latent-train = vaescope.training.cli:main" in entry_points
    assert "latent-explore = vaescope.explorer.ui.app:main" in entry_points


def test_no_source_file_imports_the_generic_names() -> None:
    """Inside the package every import goes through ``vaescope``: a user's own ``training.py`` or
    ``explorer/`` in the working folder can never be picked up instead of ours."""
    offenders = []
    for folder in ("vaescope", "training", "explorer"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(("from training", "from explorer", "import training", "import explorer")):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert not offenders, offenders


@pytest.mark.slow
def test_a_training_module_in_the_working_folder_does_not_shadow_ours(tmp_path: Path) -> None:
    (tmp_path / "training.py").write_text("raise ImportError('the user module was imported')\n")
    (tmp_path / "explorer").mkdir()
    (tmp_path / "explorer" / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    done = subprocess.run([sys.executable, "-c", "import vaescope.explorer.ui.app, vaescope.training.train as t; print(t.__name__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "vaescope.training.train", done.stderr


def test_the_explorer_never_asks_which_family_a_model_is() -> None:
    """Everything that differs between families reaches the explorer through the contract."""
    pattern = re.compile(r"model_type|is_conditional|num_components|prior_mean|prior_logvar")
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in (ROOT / "explorer").rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_the_adding_a_model_guide_builds_and_trains_as_written() -> None:
    """docs/adding-a-model.md's family file, executed as written: it registers, gets its flag, trains."""
    import torch

    from vaescope.training.cli import build_parser
    from vaescope.training.config import ModelConfig
    from vaescope.training.models import FAMILIES, build_model

    guide = (ROOT / "docs" / "adding-a-model.md").read_text()
    code = re.search(r"```python\n(# training/models/linear_vae.py.*?)```", guide, re.S).group(1)
    module = types.ModuleType("guide_linear_vae")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "adding-a-model.md", "exec"), module.__dict__)  # noqa: S102
        assert "linear-vae" in FAMILIES
        assert "--init-scale" in build_parser().format_help()
        model = build_model(ModelConfig(model_type="linear-vae", image_shape=(1, 8, 8), latent_dim=2,
                                        options={"init_scale": 0.05}))
        assert model.describe().title == "Linear VAE" and model.options.init_scale == 0.05
        loss = model.loss(torch.rand(4, 1, 8, 8))
        loss.total.backward()
        assert torch.isfinite(loss.total)
    finally:
        FAMILIES.pop("linear-vae", None)
        sys.modules.pop(module.__name__, None)
