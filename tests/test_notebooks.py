"""The six training notebooks execute in order through papermill with tiny parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

TINY_RUNS = [
    ("01_data.ipynb", {"size": 32, "bs": 2, "n_show": 2}),
    ("02_generator_pretrain.ipynb", {"size": 32, "bs": 2, "epochs": 1, "max_steps": 2, "encoder": "resnet18",
                                         "self_attention": False, "out_dir": "runs/generator"}),
    ("03_critic_pretrain.ipynb", {"size": 32, "bs": 2, "epochs": 1, "critic_nf": 8, "critic_blocks": 2,
                                      "generator_run": "runs/generator", "out_dir": "runs/critic"}),
    ("04_gan.ipynb", {"sizes": [32, 64], "batch_sizes": [2, 2], "max_steps_per_size": 2, "checkpoint_every": 0,
                          "generator_run": "runs/generator", "critic_run": "runs/critic", "out_dir": "runs/gan"}),
    ("05_damage_detector.ipynb", {"size": 32, "bs": 2, "epochs": 1, "max_steps": 2, "channels": [4, 8],
                                  "out_dir": "runs/detector"}),
    ("06_denoiser.ipynb", {"size": 32, "bs": 2, "epochs": 1, "max_steps": 2, "channels": [4, 8],
                           "out_dir": "runs/denoiser"}),
]


def test_notebooks_have_a_parameters_cell_first():
    import nbformat

    for name, _ in TINY_RUNS:
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert "parameters" in book.cells[0].metadata.get("tags", []), name
        assert "data_dir" in book.cells[0].source, name


@pytest.mark.slow
@pytest.mark.notebook
def test_training_notebooks_run_in_order(tmp_path):
    papermill = pytest.importorskip("papermill")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    for name, parameters in TINY_RUNS:
        papermill.execute_notebook(
            str(NOTEBOOKS / name), str(tmp_path / name),
            parameters={"data_dir": str(photos), **parameters},
            cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        )
    # each stage left what the next one needs, and the GAN notebook exported the chosen checkpoint
    assert list((tmp_path / "runs" / "generator" / "checkpoints").glob("generator_step*.pth"))
    assert list((tmp_path / "runs" / "critic" / "checkpoints").glob("critic_step*.pth"))
    assert (tmp_path / "runs" / "gan" / "chosen.safetensors").is_file()
    assert (tmp_path / "runs" / "detector" / "detector.safetensors").is_file()
    assert (tmp_path / "runs" / "denoiser" / "denoiser.safetensors").is_file()
