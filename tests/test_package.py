"""The installed package: one import name, ``vaescope``; nothing generic at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
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
    assert "vaescope/training/train.py" in names and "vaescope/explorer/app.py" in names
    assert not any(n.startswith(("training/", "explorer/", "benchmarks/", "tests/")) for n in names)


def test_the_commands_keep_their_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(info).decode()
    assert "latent-train = vaescope.training.cli:main" in entry_points
    assert "latent-explore = vaescope.explorer.app:main" in entry_points


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


def test_a_training_module_in_the_working_folder_does_not_shadow_ours(tmp_path: Path) -> None:
    (tmp_path / "training.py").write_text("raise ImportError('the user module was imported')\n")
    (tmp_path / "explorer").mkdir()
    (tmp_path / "explorer" / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    done = subprocess.run([sys.executable, "-c", "import vaescope.explorer.app, vaescope.training.train as t; print(t.__name__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "vaescope.training.train", done.stderr
