"""What a run writes, and what it reads back of another run: the code that runs inside the
experiment notebooks, which import this module rather than `analysis.results`.

Every `analysis` module a notebook imports, directly or through another, is part of its
runs' keys (`plan.code_fingerprint`): editing what a run saves, or how a notebook rebuilds
a trained network, makes new runs. The book's reading side (`analysis.results`, which
re-exports these names) is no part of any key: restyling a table re-runs nothing.
"""
import json
import math
from pathlib import Path

import pandas as pd

from analysis import paths

EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "clean_train_loss",
                 "clean_train_acc", "lr", "update_ratio", "seconds"]


class ResultsMissing(LookupError):
    """The results the book asks for do not exist yet."""


def write(run_dir, name: str, obj) -> Path:
    """Store a DataFrame as <name>.csv or a JSON-able object as <name>.json in the run folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, pd.DataFrame):
        path = run_dir / f"{name}.csv"
        obj.to_csv(path, index=False)
    else:
        path = run_dir / f"{name}.json"
        path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True))
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def save_training(run_dir, result: dict) -> None:
    """What a training run keeps: per-epoch metrics, a summary, the weights if kept, and the
    checkpoints if kept (checkpoints/epoch_<k>.pt, k = 0 the initial weights)."""
    # Every key the engine reports per epoch; the fixed list only heads an empty table
    # (a zero-epoch run), which would otherwise be a file without a header.
    epochs = result["epochs"]
    metrics = pd.DataFrame(epochs) if epochs else pd.DataFrame(columns=EPOCH_COLUMNS)
    write(run_dir, "metrics", metrics)
    write(run_dir, "steps", pd.DataFrame(result.get("steps", []),
                                         columns=["epoch", "step", "loss"]))
    summary = {k: v for k, v in result.items()
               if k not in ("epochs", "steps", "model", "config", "checkpoints")}
    write(run_dir, "summary", summary)
    import torch

    if result.get("model") is not None:
        torch.save(result["model"].state_dict(), Path(run_dir) / "weights.pt")
    for epoch, weights in (result.get("checkpoints") or {}).items():
        (Path(run_dir) / "checkpoints").mkdir(exist_ok=True)
        torch.save(weights, Path(run_dir) / "checkpoints" / f"epoch_{epoch}.pt")


def read_json(path: Path) -> dict:
    """A JSON file's object; {} when the file is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_dir(key: str, results=None) -> Path:
    """The folder of run `key` under the results folder (see `paths.results_dir`)."""
    return paths.results_dir(results) / "runs" / key


def load_weights(key: str, results=None) -> dict:
    """The final state_dict a run saved (runs with keep_weights=True)."""
    import torch

    path = run_dir(key, results) / "weights.pt"
    if not path.exists():
        raise ResultsMissing(f"run {key} saved no weights (set keep_weights: true in the plan)")
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_epochs(key: str, results=None) -> list[int]:
    """The epochs at which a run saved its weights (runs with checkpoints=True), in order."""
    found = (run_dir(key, results) / "checkpoints").glob("epoch_*.pt")
    epochs = sorted(int(p.stem.removeprefix("epoch_")) for p in found)
    if not epochs:
        raise ResultsMissing(f"run {key} saved no checkpoints (set checkpoints: true in the "
                             "plan)")
    return epochs


def load_checkpoint(key: str, epoch: int, results=None) -> dict:
    """The state_dict a run saved at the end of `epoch` (0: before training)."""
    import torch

    path = run_dir(key, results) / "checkpoints" / f"epoch_{epoch}.pt"
    if not path.exists():
        raise ResultsMissing(f"run {key} saved no checkpoint of epoch {epoch} (it has "
                             f"{checkpoint_epochs(key, results)})")
    return torch.load(path, map_location="cpu", weights_only=True)


def trained_model(run, results=None):
    """The network of a run (a row of `results.runs`, or its params) with the final weights it
    saved, in eval mode on the CPU."""
    from analysis import models, train

    # A run recorded before an option existed (bn_noise, say) ran with its default.
    options = ({k: run.get(k, train.DEFAULTS[k]) for k in train.LENET_OPTIONS}
               if run["model"] == "lenet5" else {})
    model = models.build_model(run["model"], **options)
    model.load_state_dict(load_weights(run["key"], results))
    return model.eval()
