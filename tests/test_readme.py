"""The README's "Use from Python" example, run exactly as written in its own process, used through
its page's API, and stopped with Ctrl-C as the README says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from serving import free_port

ROOT = Path(__file__).resolve().parents[1]


def python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Use from Python section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_example())
    port = free_port()
    # BROWSER=true: the example opens a browser tab, and here that tab is the `true` command
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "BROWSER": "true", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "example.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "example.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the example's explorer did not start in time"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        client = Client(url, verbose=False)
        out = client.predict("VAE", api_name="/load_checkpoint")
        card = next(o for o in out if isinstance(o, str) and o.startswith("### VAE"))
        assert "your model" in card and "latent dim **4**" in card
        _, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
        assert "1,797 of 1,797 images" in info
        _, note = client.predict(3, 9, 0, 1.0, api_name="/sample_class")
        assert note.startswith("**3** · VAE:")
        proc.send_signal(signal.SIGINT)  # "Ctrl-C stops it"
        assert proc.wait(timeout=60) in (0, -signal.SIGINT, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_the_readme_limits_table_is_the_one_limits_py_prints() -> None:
    """The Safety section's table is generated from vaescope/limits.py (python -m vaescope.limits):
    a limit changed in one place and not the other fails here."""
    from vaescope.limits import table

    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- limits-table -->\n", 1)[1].split("\n<!-- /limits-table -->", 1)[0]
    assert block == table()
    assert "`MAX_PARAMETERS` | 50,000,000 |" in block and "`MAX_HEADER_BYTES` | 4 MiB |" in block


def test_make_run_opens_on_a_shipped_checkpoint() -> None:
    """The README's first command opens the explorer on the MNIST VAE: the Makefile names it, and
    the file ships."""
    makefile = (ROOT / "Makefile").read_text()
    default = re.search(r"latent-explore --checkpoints assets/checkpoints --default (\S+)", makefile).group(1)
    assert default == "mnist/vae.safetensors" and (ROOT / "assets" / "checkpoints" / default).is_file()


def test_the_readme_metrics_table_is_read_from_the_shipped_files() -> None:
    """The Shipped models table is `python -m vaescope.training.recipes --table`: a checkpoint
    retrained, added or removed without regenerating the README fails here."""
    from vaescope.training.recipes import RECIPES, metrics_table

    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- metrics-table -->\n", 1)[1].split("\n<!-- /metrics-table -->", 1)[0]
    assert block == metrics_table()
    shipped = {str(p.relative_to(ROOT / "assets" / "checkpoints").with_suffix(""))
               for p in (ROOT / "assets" / "checkpoints").rglob("*.safetensors")}
    assert shipped == {r.name for r in RECIPES}  # every shipped file has its recipe, and every recipe ships
