import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import cpu_ops, results
from analysis.models import build_model
from analysis.train import (
    DEFAULTS,
    ConfigError,
    learning_rate,
    prepare,
    train,
    train_epoch,
    validate_config,
)

CPU = {"device": "cpu"}


def run(fake_data, **config):
    return train({**CPU, **config}, fake_data, progress=False)


def without_timings(result):
    kept = {k: v for k, v in result.items() if k not in ("seconds", "model")}
    kept["epochs"] = [{k: v for k, v in e.items() if k != "seconds"} for e in result["epochs"]]
    return kept


def test_defaults_resolve_to_themselves():
    assert validate_config({}) == DEFAULTS


def test_numbers_are_normalised():
    cfg = validate_config({"lr": 1, "lr_milestones": (5, 8)})
    assert cfg["lr"] == 1.0 and isinstance(cfg["lr"], float)
    assert cfg["lr_milestones"] == [5, 8]


@pytest.mark.parametrize("key, value, allowed", [
    ("optimizer", "adamw", "'sgd', 'adam'"),
    ("model", "vgg", "'lenet5', 'resnet8', 'plain8', 'resnet20'"),
    ("activation", "gelu", "'relu', 'leaky_relu', 'swish'"),
    ("init", "orthogonal", "'default', 'kaiming_normal', 'xavier_normal'"),
    ("schedule", "linear", "'none', 'step', 'cosine'"),
    ("device", "tpu", "'auto', 'cpu', 'cuda'"),
    ("lr", 0, "> 0"),
    ("lr", float("nan"), "> 0"),
    ("momentum", 1.0, "[0, 1)"),
    ("dropout", 1.0, "[0, 1)"),
    ("flip_p", 1.5, "[0, 1]"),
    ("weight_decay", -1e-4, ">= 0"),
    ("batch_size", 1, ">= 2"),
    ("epochs", -1, ">= 0"),
    ("epochs", 2.5, "integer"),
    ("crop_padding", 40, "0 to 16"),
    ("subset", 5, "None"),
    ("lr_milestones", [75, 50], "increasing"),
    ("batch_norm", "yes", "True or False"),
    ("seed", True, "integer"),
])
def test_bad_values_name_the_key_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        validate_config({key: value})
    assert repr(key) in str(e.value) and allowed in str(e.value)


def test_a_number_written_as_text_gets_a_hint():
    with pytest.raises(ConfigError, match="YAML"):
        validate_config({"weight_decay": "1e-4"})


def test_unknown_key_lists_the_valid_keys_and_suggests_one():
    with pytest.raises(ConfigError) as e:
        validate_config({"lr_gama": 0.5})
    message = str(e.value)
    assert "'lr_gama'" in message and "did you mean 'lr_gamma'" in message
    assert all(key in message for key in DEFAULTS)


def test_lenet_options_are_refused_for_resnets():
    with pytest.raises(ConfigError, match="'batch_norm'.*'lenet5'"):
        validate_config({"model": "resnet20", "batch_norm": True})


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(ConfigError, match="nesterov"):
        validate_config({"nesterov": True, "momentum": 0.0})


def test_config_is_checked_before_any_data_is_looked_for(tmp_path):
    with pytest.raises(ConfigError, match="optimizer"):
        train({"optimizer": "adamw"}, data_dir=tmp_path / "nowhere", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error(fake_data):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train({"device": "cuda"}, fake_data, progress=False)


def test_learning_rate_schedules():
    step = validate_config({"schedule": "step", "lr": 0.1, "lr_milestones": [2, 4],
                            "lr_gamma": 0.5})
    assert [learning_rate(step, t) for t in (0, 1.99, 2, 4.5)] == [0.1, 0.1, 0.05, 0.025]
    cosine = validate_config({"schedule": "cosine", "lr": 0.1, "epochs": 10})
    assert learning_rate(cosine, 0) == 0.1
    assert learning_rate(cosine, 5) == pytest.approx(0.05)
    warm = validate_config({"warmup_epochs": 2, "lr": 0.1})
    assert [learning_rate(warm, t) for t in (0, 1, 2, 3)] == pytest.approx([0, 0.05, 0.1, 0.1])


def test_training_lowers_the_loss_and_reports_every_metric(fake_data):
    r = run(fake_data, epochs=3, lr=0.05)
    assert r["status"] == "finished" and r["diverged_at"] is None
    assert abs(r["init"]["val_loss"] - math.log(10)) < 0.2  # untrained: close to uniform
    assert [e["epoch"] for e in r["epochs"]] == [1, 2, 3]
    assert set(r["epochs"][0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                   "clean_train_loss", "clean_train_acc",
                                   "lr", "update_ratio", "seconds", "dead_conv1", "dead_conv2",
                                   "dead_fc3", "dead_fc4"}
    assert r["epochs"][-1]["train_loss"] < r["init"]["val_loss"] - 0.5
    assert r["best_val_acc"] > 0.5
    assert r["best_val_acc"] == max(e["val_acc"] for e in r["epochs"])
    assert r["test"]["final"]["acc"] > 0.5 and r["test"]["best"]["acc"] > 0.5
    assert r["num_params"] == 62_006 and r["device"] == "cpu" and r["device_memory"] is None
    assert r["sizes"] == {"train": 900, "val": 100, "test": 200}
    assert r["model"] is None
    # Every step's mean loss, 8 steps of 128 images (and one of 4) an epoch, averaging to the
    # epoch's training loss.
    first = [s["loss"] for s in r["steps"] if s["epoch"] == 1]
    assert len(r["steps"]) == 3 * len(first) and len(first) == math.ceil(900 / 128)
    sizes = [128] * (len(first) - 1) + [900 - 128 * (len(first) - 1)]
    assert sum(x * n for x, n in zip(first, sizes, strict=True)) / 900 == pytest.approx(
        r["epochs"][0]["train_loss"], rel=1e-5)
    json.dumps(r, allow_nan=False)


def test_zero_epochs_evaluates_the_untrained_model(fake_data):
    r = run(fake_data, epochs=0)
    assert r["epochs"] == [] and r["best_epoch"] is None
    assert r["test"]["best"] == {"loss": None, "acc": None}
    assert r["test"]["final"]["loss"] == pytest.approx(math.log(10), abs=0.2)


def test_a_huge_learning_rate_is_reported_as_diverged(fake_data):
    r = run(fake_data, epochs=5, lr=1e3)
    assert r["status"] == "diverged"
    epoch, step = r["diverged_at"]["epoch"], r["diverged_at"]["step"]
    assert 1 <= epoch <= 5 and step >= 1
    assert len(r["epochs"]) == epoch - 1  # the diverged epoch is not reported
    # ... but its steps are, up to the blow-up: the first non-finite loss is None.
    blown = [s for s in r["steps"] if s["epoch"] == epoch]
    assert blown[step - 1]["loss"] is None
    assert all(s["loss"] is not None for s in blown[: step - 1])
    assert r["test"]["final"] == {"loss": None, "acc": None}
    json.dumps(r, allow_nan=False)


def test_same_config_on_cpu_gives_identical_metrics(fake_data):
    config = {"epochs": 2, "crop_padding": 2, "flip_p": 0.5, "dropout": 0.2, "lr": 0.05}
    first, second = run(fake_data, **config), run(fake_data, **config)
    assert without_timings(first) == without_timings(second)
    assert without_timings(run(fake_data, **config, seed=1)) != without_timings(first)


def test_step_schedule_is_applied_per_epoch(fake_data):
    r = run(fake_data, epochs=3, schedule="step", lr_milestones=[2], lr_gamma=0.1)
    assert [e["lr"] for e in r["epochs"]] == pytest.approx([0.01, 0.01, 0.001])


def test_subset_and_kept_weights(fake_data):
    r = run(fake_data, epochs=1, subset=200, keep_weights=True)
    assert r["sizes"]["train"] == 200
    model = r["model"]
    assert isinstance(model, nn.Module) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_l1_penalty_shrinks_the_weights(fake_data):
    def l1_norm(**config):
        model = run(fake_data, epochs=2, lr=0.05, keep_weights=True, **config)["model"]
        return sum(p.abs().sum().item() for p in model.parameters())

    assert l1_norm(l1=1e-2) < 0.9 * l1_norm()


@pytest.mark.parametrize("config", [
    {"optimizer": "adam", "lr": 1e-3, "adam_eps": 1e-2, "schedule": "cosine",
     "warmup_epochs": 1},
    {"activation": "swish", "batch_norm": True, "init": "kaiming_normal",
     "label_smoothing": 0.1, "vflip_p": 0.5, "nesterov": True},
    {"model": "resnet20", "subset": 100, "batch_size": 50},
])
def test_other_options_train(fake_data, config):
    r = run(fake_data, epochs=2, **config)
    assert r["status"] == "finished" and len(r["epochs"]) == 2
    assert all(math.isfinite(e["train_loss"]) for e in r["epochs"])


@pytest.mark.parametrize("model, epochs", [("lenet5", 60), ("resnet20", 60)])
def test_a_tiny_batch_can_be_overfit(fake_data, model, epochs):
    # The classic pipeline check (Lab 1): 20 images, one batch per epoch, no regularisation;
    # a model, loss or optimizer bug shows up as a loss that will not go to zero.
    r = run(fake_data, model=model, subset=20, batch_size=20, epochs=epochs, lr=0.05,
            weight_decay=0.0)
    last = r["epochs"][-1]
    assert r["sizes"]["train"] == 20
    assert last["clean_train_acc"] == 1.0 and last["clean_train_loss"] < 0.05


def test_bn_noise_needs_batch_norm():
    with pytest.raises(ConfigError, match="'bn_noise'.*batch_norm True"):
        validate_config({"bn_noise": 1.0})
    assert validate_config({"batch_norm": True, "bn_noise": 1})["bn_noise"] == 1.0


def test_checkpoints_keep_every_epoch_and_are_saved_and_loaded(fake_data, tmp_path):
    r = run(fake_data, epochs=2, subset=200, keep_weights=True, checkpoints=True)
    assert sorted(r["checkpoints"]) == [0, 1, 2]
    final = r["model"].state_dict()
    assert all(torch.equal(r["checkpoints"][2][k], final[k]) for k in final)
    assert not torch.equal(r["checkpoints"][0]["features.0.weight"], final["features.0.weight"])
    torch.manual_seed(0)  # the run's seed: epoch 0 holds the initial weights
    assert torch.equal(r["checkpoints"][0]["features.0.weight"],
                       build_model("lenet5").state_dict()["features.0.weight"])

    results.save_training(tmp_path / "runs" / "k", r)
    assert results.checkpoint_epochs("k", tmp_path) == [0, 1, 2]
    loaded = results.load_checkpoint("k", 1, tmp_path)
    assert all(torch.equal(loaded[k], r["checkpoints"][1][k]) for k in loaded)
    assert "checkpoints" not in json.loads((tmp_path / "runs" / "k" / "summary.json").read_text())
    with pytest.raises(results.ResultsMissing, match="no checkpoint of epoch 5"):
        results.load_checkpoint("k", 5, tmp_path)
    assert run(fake_data, epochs=1, subset=200)["checkpoints"] is None


def test_the_engine_trains_as_a_plain_loop_does(fake_data, monkeypatch):
    """The engine's fast path (compiled CPU kernels for the batch and LeNet-5's layers,
    fused SGD) against a plain loop from the same weights, over the same batches and random
    draws: one image at a time cropped and flipped, normalised as torchvision does, PyTorch's
    own layers, an unfused SGD, in the default memory format."""
    cfg = validate_config({**CPU, "crop_padding": 4, "flip_p": 0.5, "vflip_p": 0.5, "lr": 0.05,
                           "seed": 3})
    engine = prepare(cfg, fake_data, torch.device("cpu"))
    model = copy.deepcopy(engine.model).to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                weight_decay=cfg["weight_decay"], foreach=False)
    stats = train_epoch(engine, 1)
    monkeypatch.setattr(cpu_ops, "kernels", lambda: None)  # the plain loop: PyTorch's layers

    # The engine's generator draws, per epoch, the batch order, then per batch the crop
    # offsets (top, then left), the horizontal flips, the vertical flips.
    generator = torch.Generator().manual_seed(cfg["seed"])
    x, y, p = fake_data.train_x, fake_data.train_y, cfg["crop_padding"]
    mean, std = fake_data.mean[:, None, None], fake_data.std[:, None, None]
    losses, ratios = [], []
    for idx in torch.randperm(len(y), generator=generator).split(cfg["batch_size"]):
        n = len(idx)
        top, left = (torch.randint(0, 2 * p + 1, (n,), generator=generator) for _ in "tl")
        hflip, vflip = (torch.rand(n, generator=generator) < 0.5 for _ in "hv")
        images = []
        for i, t, left_, h, v in zip(idx, top, left, hflip, vflip, strict=True):
            image = F.pad(x[i], (p, p, p, p))[:, t:t + 32, left_:left_ + 32]
            image = image.flip(2) if h else image
            image = image.flip(1) if v else image
            images.append((image.float() / 255 - mean) / std)
        before = [q.detach().clone() for q in model.parameters()]
        loss = F.cross_entropy(model(torch.stack(images)), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        change = torch.cat([(q - b).flatten() for q, b in zip(model.parameters(), before,
                                                              strict=True)])
        ratios.append(change.pow(2).mean().sqrt().item() / cfg["lr"])

    assert stats["step_losses"] == pytest.approx(losses, rel=1e-5)
    assert stats["update_ratio"] == pytest.approx(sum(ratios) / len(ratios), rel=1e-3)
    for ours, theirs in zip(engine.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
