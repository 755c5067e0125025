"""Training stages end to end on tiny generated images (CPU, resnet18 without attention, 32-64 px)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastai.torch_core import get_model
from PIL import Image
from typer.testing import CliRunner

from restore.arch import CriticSpec, GeneratorSpec, build_generator, unbake_weight_norms
from restore.config import load_config
from restore.data import (
    DataOptions,
    lab_scaled_to_rgb,
    make_dataloaders,
    make_datasets,
    rgb_to_lab_scaled,
    split_items,
)
from restore.train import (
    CriticConfig,
    GanConfig,
    GeneratorConfig,
    PixelLoss,
    PixelLossOptions,
    export_generator,
    load_critic_checkpoint,
    load_generator_checkpoint,
    train_critic,
    train_gan,
    train_generator,
)
from restore.weights import WeightsError, load_generator, save_weights

TINY_SPEC = GeneratorSpec(encoder="resnet18", self_attention=False)
TINY_CRITIC = CriticSpec(nf=8, n_blocks=2)
TINY = {"size": 32, "bs": 2, "valid_fraction": 0.25}


def _write_images(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        # smooth gradients plus noise: something a generator can learn a little of in a few steps
        h, w = 40 + 4 * (i % 3), 48
        base = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.3, 1.0, (1, 1, 3))
        image = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"photo_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("photos"), 8)


@pytest.fixture(scope="module")
def generator_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    config = GeneratorConfig(spec=TINY_SPEC, epochs=2, checkpoint_every=2, **TINY)
    return config, out, train_generator(config, photos, out, device="cpu")


@pytest.fixture(scope="module")
def critic_run(photos, generator_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("critic")
    config = CriticConfig(generator_checkpoint=str(generator_run[2].checkpoint), critic=TINY_CRITIC, epochs=1,
                          **TINY)
    return out, train_critic(config, photos, out, device="cpu")


# ------------------------------------------------------------------------------------------------- data
def test_split_is_deterministic_disjoint_and_order_free():
    keys = [f"dir/{i}.jpg" for i in range(20)]
    train, valid = split_items(keys, 0.2, seed=0)
    assert len(valid) == 4 and not set(train) & set(valid) and len(train) + len(valid) == 20
    shuffled = keys[::-1]
    _, valid_shuffled = split_items(shuffled, 0.2, seed=0)
    assert sorted(shuffled[i] for i in valid_shuffled) == sorted(keys[i] for i in valid)


def test_validation_batches_repeat_and_training_batches_vary(photos):
    options = DataOptions(**TINY)
    first = make_dataloaders(photos, options, device="cpu")
    second = make_dataloaders(photos, options, device="cpu")
    x1, y1 = next(iter(first.valid))
    x2, y2 = next(iter(second.valid))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (2, 3, 32, 32) and -1.0 <= float(x1.min()) and float(x1.max()) <= 1.0
    train_a, train_b = next(iter(first.train))[0], next(iter(first.train))[0]
    assert not torch.equal(train_a, train_b)


def test_paired_folder_pairs_by_name_and_crops_both_alike(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(4):
        target = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)
        for side, image in (("target", target), ("input", 255 - target)):
            (tmp_path / side).mkdir(exist_ok=True)
            Image.fromarray(image).save(tmp_path / side / f"{i}.png")
    train, valid = make_datasets(tmp_path, DataOptions(size=32, bs=2, valid_fraction=0.25))
    assert len(train) == 3 and len(valid) == 1
    for dataset in (train, valid):
        degraded, clean = dataset.pair(0)
        assert degraded.shape == clean.shape == (32, 32, 3)
        # the same crop of both sides: the inverted input still inverts back to the target
        assert np.abs(255 - degraded.astype(int) - clean.astype(int)).mean() < 3


def test_a_degrade_output_folder_is_read_as_pairs(photos, tmp_path):
    from degradations.builder import build_pairs

    build_pairs(photos, tmp_path / "pairs", size=0)
    train, valid = make_datasets(tmp_path / "pairs", DataOptions(**TINY))
    assert len(train) + len(valid) == 8 and hasattr(train, "pairs")  # paired, not degraded again
    degraded, clean = valid.pair(0)
    assert degraded.shape == clean.shape == (32, 32, 3)


def test_unreadable_image_names_the_file(tmp_path):
    _write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    train, valid = make_datasets(tmp_path, DataOptions(size=32, bs=1, valid_fraction=0.5))
    with pytest.raises(ValueError, match="broken.png"):
        for dataset in (train, valid):
            for i in range(len(dataset.files)):
                dataset[i]


def test_lab_targets_round_trip():
    image = np.random.default_rng(2).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    lab = rgb_to_lab_scaled(image)
    assert lab.shape == (3, 8, 8) and float(lab.abs().max()) <= 1.0
    assert np.abs(lab_scaled_to_rgb(lab).astype(int) - image.astype(int)).max() <= 2


# ----------------------------------------------------------------------------------------------- losses
def test_vgg_feature_loss_from_a_local_state_dict(tmp_path):
    # Only the layers the loss uses must be in the file: features.0 and features.2 for relu1_2 (index 3).
    torch.manual_seed(0)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
             "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64)}
    path = tmp_path / "vgg16_head.pth"
    torch.save(state, path)
    options = PixelLossOptions(mse_weight=0.0, vgg_weight=1.0, vgg_weights=str(path), vgg_layers=(3,))
    loss = PixelLoss(options)
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    output = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    value = loss(output, target)
    value.backward()
    assert float(value) > 0 and output.grad is not None and float(output.grad.abs().sum()) > 0
    torch.save({"features.0.weight": state["features.0.weight"]}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="short.pth"):
        PixelLoss(PixelLossOptions(vgg_weight=1.0, vgg_weights=str(tmp_path / "short.pth"), vgg_layers=(3,)))


def test_ssim_and_l1_terms_are_zero_only_for_identical_images():
    loss = PixelLoss(PixelLossOptions(mse_weight=0.0, l1_weight=1.0, ssim_weight=1.0))
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(target.flip(-1), target)) > 0.1


# ----------------------------------------------------------------------------------------------- stages
def test_generator_stage_checkpoints_and_exports(generator_run):
    _config, out, result = generator_run
    # 6 training photos, batch 2 -> 3 steps per epoch, 2 epochs: checkpoints at 2, 4 and the final 6
    assert result.step == 6
    names = sorted(p.name for p in (out / "checkpoints").glob("*.pth"))
    assert names == ["generator_step0000002.pth", "generator_step0000004.pth", "generator_step0000006.pth"]
    meta = json.loads(result.checkpoint.with_suffix(".json").read_text())
    assert meta["step"] == 6 and meta["config"]["size"] == 32 and meta["generator_spec"]["encoder"] == "resnet18"
    assert len(result.history) == 2 and all(row["valid_loss"] > 0 for row in result.history)

    # the exported fp16 weights load with the inference loader and compute what the trained network does
    model, card = load_generator(result.exported)
    assert card["generator_spec"]["encoder"] == "resnet18" and card["training"]["step"] == 6
    trained, _ = load_generator_checkpoint(result.checkpoint)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x), atol=2e-2)


def test_resume_continues_from_the_saved_step(generator_run, photos, tmp_path):
    config, out, full = generator_run
    resumed = train_generator(config, photos, tmp_path, resume=out / "checkpoints" / "generator_step0000004.pth",
                              device="cpu")
    assert resumed.step == 6
    # only the remaining two batches were trained, and no checkpoint before step 6 was rewritten
    assert len(resumed.learner.recorder.losses) == 2
    # ... on the one-cycle schedule exactly where the uninterrupted run was at those steps
    assert resumed.learner.recorder.lrs == pytest.approx(full.learner.recorder.lrs[4:6])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pth")) == ["generator_step0000006.pth"]


def test_export_from_a_checkpoint_file_writes_a_card(generator_run, tmp_path):
    _, _, result = generator_run
    path = export_generator(result.checkpoint, tmp_path / "model.safetensors", card={"note": "placeholder"})
    _model, card = load_generator(path)
    assert card["note"] == "placeholder" and card["dtype"] == "float16" and card["training"]["stage"] == "generator"


def test_critic_stage_learns_real_vs_generated(critic_run):
    out, result = critic_run
    assert 0.0 <= result.extra["accuracy"] <= 1.0
    assert len(list((out / "critic_images" / "train" / "fake").glob("*.png"))) == 6
    critic = load_critic_checkpoint(result.checkpoint, CriticSpec())  # the spec comes from the JSON
    with torch.no_grad():
        assert critic(torch.zeros(2, 3, 32, 32)).shape[0] == 2


def test_gan_stage_progressive_resizing_and_export(photos, generator_run, critic_run, tmp_path):
    config = GanConfig(generator_checkpoint=str(generator_run[2].checkpoint),
                       critic_checkpoint=str(critic_run[1].checkpoint), critic=TINY_CRITIC,
                       sizes=(32, 64), batch_sizes=(2, 2), max_steps_per_size=3, checkpoint_every=0,
                       valid_fraction=0.25)
    result = train_gan(config, photos, tmp_path, device="cpu")
    assert result.extra["sizes"] == [32, 64]
    assert result.step == 6 and [row["size"] for row in result.history] == [32, 64]
    model, card = load_generator(result.exported)
    assert card["training"]["stage"] == "gan"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("threshold", [10.0, 0.0])
def test_switcher_alternates_and_follows_the_threshold(photos, tmp_path, threshold):
    config = GanConfig(spec=TINY_SPEC, critic=TINY_CRITIC, sizes=(32,), batch_sizes=(2,), epoch_size=12,
                       max_steps_per_size=6, critic_thresh=threshold, checkpoint_every=0, export=False,
                       valid_fraction=0.25)
    result = train_gan(config, photos, tmp_path, device="cpu")
    generator_steps, critic_steps = result.extra["generator_steps"], result.extra["critic_steps"]
    assert generator_steps + critic_steps == 6
    if threshold > 1:
        # every critic loss is below 10: the switcher hands over after each step, so the two alternate
        assert generator_steps == critic_steps == 3
    else:
        # no BCE loss is below 0: the critic never hands over
        assert (generator_steps, critic_steps) == (0, 6)


def test_lab_output_space_trains_on_lab_targets(photos, tmp_path):
    spec = GeneratorSpec(encoder="resnet18", self_attention=False, output_space="lab")
    config = GeneratorConfig(spec=spec, epochs=1, max_steps=1, export=False, **TINY)
    result = train_generator(config, photos, tmp_path, device="cpu")
    dataset = result.learner.dls.valid.dataset
    _, clean = dataset.pair(0)
    assert torch.allclose(dataset[0][1], rgb_to_lab_scaled(clean))
    assert result.step == 1


def test_cli_generator_names_the_checkpoint(photos, tmp_path):
    from restore.train_cli import app

    config = tmp_path / "tiny.toml"
    config.write_text('size = 32\nbs = 2\nepochs = 1\nvalid_fraction = 0.25\nexport = false\n'
                      '[spec]\nencoder = "resnet18"\nself_attention = false\n')
    result = CliRunner().invoke(app, ["generator", "--config", str(config), "--data", str(photos),
                                      "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and "generator_step0000001.pth" in result.output
    bad = CliRunner().invoke(app, ["generator", "--config", str(config), "--data", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "missing" in bad.output


# ------------------------------------------------------------------------------------- fine-tuning
def test_unbaked_weights_compute_what_the_baked_ones_do(tmp_path):
    trained = build_generator(TINY_SPEC).train()
    with torch.no_grad():  # each training-mode pass is one power iteration: converge them, as a long run does
        for _ in range(60):
            trained(torch.rand(2, 3, 32, 32) * 2 - 1)
    save_weights(trained, tmp_path / "tiny.safetensors", TINY_SPEC)
    baked, _ = load_generator(tmp_path / "tiny.safetensors")
    normed = build_generator(TINY_SPEC)
    state = unbake_weight_norms(normed, baked.state_dict())
    normed.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = baked(x)
        assert (normed.eval()(x) - expected).abs().max() < 0.05 * expected.abs().mean()
    # the power-iteration vectors are the weight's top singular pair, so sigma starts exact
    key = next(k for k in state if k.endswith("weight_orig"))
    stem = key.removesuffix("weight_orig")
    matrix = state[key].flatten(1)
    sigma = state[f"{stem}weight_u"] @ matrix @ state[f"{stem}weight_v"]
    assert float(sigma) == pytest.approx(float(torch.linalg.matrix_norm(matrix, ord=2)), rel=1e-4)


def test_init_weights_start_the_generator_from_shipped_weights(generator_run, photos, tmp_path):
    config, _, result = generator_run
    tuned = train_generator(dataclasses.replace(config, init_weights=str(result.exported), lr=1e-9, epochs=1,
                                                max_steps=1, export=False), photos, tmp_path, device="cpu")
    baked, _ = load_generator(result.exported)
    fresh = build_generator(TINY_SPEC)
    expected = unbake_weight_norms(fresh, baked.state_dict())
    got = get_model(tuned.learner.model).state_dict()
    learned = [k for k in expected if "running_" not in k and "num_batches" not in k and not k.endswith("_u")
               and not k.endswith("_v")]
    assert all(torch.allclose(got[k].float(), expected[k].float(), atol=1e-5) for k in learned)
    # a random start is far from those weights
    assert not torch.allclose(fresh.state_dict()[learned[0]], expected[learned[0]], atol=1e-3)


def test_init_weights_that_do_not_fit_name_the_file(generator_run, photos, tmp_path):
    config, _, result = generator_run
    other = dataclasses.replace(config, spec=GeneratorSpec(encoder="resnet34", self_attention=False),
                                init_weights=str(result.exported), max_steps=1, export=False)
    with pytest.raises(WeightsError, match=result.exported.name):
        train_generator(other, photos, tmp_path, device="cpu")


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("critic_toml, gan_toml", [
    (ROOT / "restore" / "configs" / "critic.toml", ROOT / "restore" / "configs" / "gan.toml"),
    (ROOT / "docs" / "configs" / "critic-cpu.toml", ROOT / "docs" / "configs" / "gan-cpu.toml"),
])
def test_stage_configs_load_and_their_critics_agree(critic_toml, gan_toml):
    """The shipped TOMLs stay readable by their stages, and the GAN's critic is the one the critic stage trains."""
    critic = load_config(CriticConfig, critic_toml)
    gan = load_config(GanConfig, gan_toml)
    assert gan.critic == critic.critic
    assert len(gan.sizes) == len(gan.batch_sizes)
    assert list(gan.sizes) == sorted(gan.sizes)  # progressive resizing: small to large
