"""Data-parallel training under torchrun: 2 CPU processes (gloo) through fastai's distrib_ctx."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _photos(folder, seed: int):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _torchrun(stage: str, config, photos, out) -> subprocess.CompletedProcess:
    """`restore-train STAGE` under torchrun with 2 CPU processes; torchrun exits non-zero if any rank fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "restore.train_cli", stage, "--config", str(config), "--data", str(photos), "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)



@pytest.mark.slow
def test_two_cpu_processes_train_and_rank0_writes_one_checkpoint(tmp_path):
    photos = _photos(tmp_path / "photos", seed=0)
    config = tmp_path / "tiny.toml"
    # no periodic checkpoints: the run must end with exactly one (the final one, from rank 0)
    config.write_text('size = 32\nbs = 2\nepochs = 1\ncheckpoint_every = 0\nexport = false\n'
                      '[spec]\nencoder = "resnet18"\nself_attention = false\n')
    out = tmp_path / "run"
    done = _torchrun("generator", config, photos, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checkpoints = list((out / "checkpoints").glob("*.pth"))
    assert len(checkpoints) == 1
    meta = json.loads(checkpoints[0].with_suffix(".json").read_text())
    assert meta["hardware"]["processes"] == 2
    # 9 training photos, batch 2 -> 4 batches, split between 2 processes -> 2 steps each
    assert meta["step"] == 2
    assert done.stdout.count("checkpoint:") == 1  # only rank 0 reports


@pytest.mark.slow
def test_two_cpu_processes_run_the_gan_stage_with_both_networks_training(tmp_path):
    photos = _photos(tmp_path / "photos", seed=1)
    config = tmp_path / "gan.toml"
    # critic_thresh far above any BCE loss: the switcher hands over after every critic step, so both the
    # generator and the critic train, each with half of the GAN's parameters unused by the other
    config.write_text('sizes = [32, 64]\nbatch_sizes = [2, 2]\nepochs_per_size = 1\ncheckpoint_every = 0\n'
                      'export = false\ncritic_thresh = 5.0\n[spec]\nencoder = "resnet18"\nself_attention = false\n'
                      '[critic]\nkind = "fastai"\nnf = 16\nn_blocks = 1\n')
    out = tmp_path / "run"
    done = _torchrun("gan", config, photos, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = {line.split(":")[0]: int(line.split(":")[1]) for line in done.stdout.splitlines()
             if line.startswith(("generator_steps:", "critic_steps:"))}
    assert steps["generator_steps"] > 0 and steps["critic_steps"] > 0, done.stdout[-2000:]
    checkpoints = list((out / "checkpoints").glob("*.pth"))
    assert len(checkpoints) == 1
    assert json.loads(checkpoints[0].with_suffix(".json").read_text())["hardware"]["processes"] == 2
