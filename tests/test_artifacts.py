"""What runs write (the code inside the experiment notebooks): files a later run or the book
reads back."""
import pandas as pd

from analysis import artifacts


def test_saved_metrics_keep_every_epoch_key_and_a_header_without_epochs(tmp_path):
    epoch = {c: 0.5 for c in artifacts.EPOCH_COLUMNS} | {"epoch": 1, "grad_norm": 3.0}
    artifacts.save_training(tmp_path / "a", {"epochs": [epoch], "status": "finished"})
    assert pd.read_csv(tmp_path / "a" / "metrics.csv")["grad_norm"].tolist() == [3.0]
    artifacts.save_training(tmp_path / "b", {"epochs": [], "status": "finished"})
    assert list(pd.read_csv(tmp_path / "b" / "metrics.csv").columns) == artifacts.EPOCH_COLUMNS


def test_json_holds_what_training_returns(tmp_path):
    import numpy as np
    import torch

    path = artifacts.write(tmp_path, "summary", {"acc": np.float32(0.5), "loss": float("nan"),
                                                "grad": float("inf"), "steps": (torch.tensor(3),),
                                                1: "one"})
    assert artifacts.read_json(path) == {"acc": 0.5, "loss": None, "grad": "inf",
                                         "steps": [3], "1": "one"}
    assert artifacts.read_json(tmp_path / "absent.json") == {}
