"""The alpha slider works in JupyterLab: a real server and headless Chromium run its notebook cell, drag the slider
and switch the image (tests/browser/check_alpha_slider.py). Skipped where Chromium or playwright is missing."""
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from pruning_utils.config import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "slidertest"
CELL = """import torch
import pruning_utils as pu
from pruning_utils.engine import data, models
from pruning_utils.harness.widgets import alpha_explorer
torch.manual_seed(0)
images = data.load_photos("embedded", seed=0).val_crops[:2].float().div(255)
model = pu.attach_branches(models.RGBAutoencoder(width=0.0625), 0.35, include=["encoder"], init="he")
alpha_explorer(model, images, ["photo A", "photo B"], alpha=1.0)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on ``tmp_path`` holding slider.ipynb; yields the notebook's URL (skips at once where
    the browser check cannot run)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: on Debian, apt-get install -y chromium (see the README's set-up)")
    pytest.importorskip("playwright", reason="playwright is missing: make setup installs the dev extra")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "slider.ipynb")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
                               "--port", str(port), f"--IdentityProvider.token={TOKEN}",
                               f"--ServerApp.root_dir={tmp_path}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("JupyterLab did not start within 120 s")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/lab/tree/slider.ipynb?token={TOKEN}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.notebooks
def test_alpha_slider_renders_and_responds_in_jupyterlab(lab, tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "tests" / "browser"))
    from check_alpha_slider import drive

    log = drive(lab, str(tmp_path), "photo A", "photo B", chromium=CHROMIUM)
    failed = [name for name, passed in log["checks"].items() if not passed]
    assert not failed, f"the slider check failed: {failed}; log in {tmp_path / 'check_log.json'}"
    assert not log["error_outputs"], log["error_outputs"]
