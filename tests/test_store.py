"""The results folder's bookkeeping for the book: Quarto's frozen chapters are forgotten
exactly when their inputs change."""
from analysis import store


def test_thaw_empties_the_freeze_folder_only_when_the_books_inputs_change(tmp_path):
    root, results, freeze = tmp_path / "book", tmp_path / "results", tmp_path / "book/_freeze"
    (root / "analysis").mkdir(parents=True)
    (root / "analysis" / "m.py").write_text("x = 1\n")
    (results / "index").mkdir(parents=True)
    (results / "index" / "smoke.json").write_text('[{"key": "k"}]')
    (results / "runs" / "k").mkdir(parents=True)
    (results / "runs" / "k" / "status.json").write_text('{"finished": 1}')

    def frozen():
        (freeze / "lab1").mkdir(parents=True, exist_ok=True)
        return freeze.exists()

    assert frozen() and store.thaw(freeze, root, results, "smoke")  # nothing recorded yet
    assert frozen() and not store.thaw(freeze, root, results, "smoke")  # nothing changed
    assert freeze.exists()
    (results / "runs" / "k" / "status.json").write_text('{"finished": 2}')  # run again
    assert store.thaw(freeze, root, results, "smoke") and not freeze.exists()
    assert frozen() and not store.thaw(freeze, root, results, "smoke")
    (root / "analysis" / "m.py").write_text("x = 2\n")  # code the chapters import
    assert store.thaw(freeze, root, results, "smoke")
    assert frozen() and store.thaw(freeze, root, results, "cpu")  # another profile's results
