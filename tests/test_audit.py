"""fmnist audit: confident learning finds label errors planted in a small synthetic data set,
in the training set (cross-validated fold models) and in the test set (the run's model), and
writes the ranked table, the grids and the page. Hostile input is in test_calibration.py."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
from conftest import run_cli, synthetic

from fmnist.data import sources as fsources
from fmnist.data.idx import encode_idx
from fmnist.runtime.runs import AUDIT_DIR, AUDIT_GRIDS, AUDIT_PAGE, AUDIT_TABLE
from fmnist.studies.audit import AuditOptions, audit, find_suspects, fold_assignment
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import train

pytest.importorskip("cleanlab")


def planted(folder, n_train=1200, n_test=300, rate=0.05):
    """Clean synthetic images whose labels are wrong at known places; returns the indices."""
    rng = np.random.default_rng(7)
    tr, trl = synthetic(n_train, 0)
    te, tel = synthetic(n_test, 1)
    wrong = {}
    for split, labels in (("train", trl), ("test", tel)):
        idx = np.sort(rng.choice(len(labels), int(rate * len(labels)), replace=False))
        labels[idx] = (labels[idx] + rng.integers(1, 10, len(idx))) % 10
        wrong[split] = set(idx.tolist())
    folder.mkdir(parents=True)
    for key, arr in (("train-images", tr), ("train-labels", trl), ("t10k-images", te), ("t10k-labels", tel)):
        (folder / fsources.FILES[key].name).write_bytes(gzip.compress(encode_idx(arr)))
    return wrong


def test_folds_are_stratified_and_seeded():
    labels = np.arange(1000) % 10
    f = fold_assignment(1000, 4, labels, 0)
    assert (f == fold_assignment(1000, 4, labels, 0)).all()
    for k in range(4):
        assert np.bincount(labels[f == k], minlength=10).min() >= 24


def test_find_suspects_ranks_the_confidently_contradicted_labels_first():
    rng = np.random.default_rng(0)
    labels = np.arange(500) % 5
    probs = np.full((500, 5), 0.02)
    probs[np.arange(500), labels] = 0.92
    bad = rng.choice(500, 20, replace=False)
    probs[bad] = 0.02
    probs[bad, (labels[bad] + 1) % 5] = 0.92
    found = find_suspects(labels, probs, "train")
    assert {s.index for s in found} == set(bad.tolist())
    assert all(s.suggested == (s.given + 1) % 5 for s in found)


@pytest.mark.slow  # four small trainings: about 30 s on 2 idle cores
def test_the_audit_finds_label_errors_planted_in_both_splits(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    wrong = planted(data)
    run = tmp_path / "run"
    train(
        TrainConfig(model="seed", epochs=2, batch_size=64, val_size=100, data_dir=str(data), verify=False, out=str(run))
    )
    args = ["--folds", "3", "--epochs", "2", "--batch-size", "64", "--grid", "12"]
    code, out, err = run_cli(monkeypatch, capsys, "audit", run, *args, "--data-dir", data, "--no-verify")
    assert code == 0, err
    for split in ("train", "test"):
        assert f"{split}: " in out
    rows = list(csv.DictReader((run / AUDIT_TABLE).open()))
    for split in ("train", "test"):
        flagged = {int(r["index"]) for r in rows if r["split"] == split}
        hits = flagged & wrong[split]
        assert len(hits) >= 0.8 * len(wrong[split]), (split, sorted(flagged), sorted(wrong[split]))
        assert len(hits) >= 0.6 * len(flagged), (split, sorted(flagged), sorted(wrong[split]))
        ranks = [int(r["rank"]) for r in rows if r["split"] == split]
        assert ranks == list(range(1, len(ranks) + 1))
        assert (run / AUDIT_GRIDS[split]).read_bytes()[:4] == b"\x89PNG"
    assert "suspect" in (run / AUDIT_PAGE).read_text()
    assert "test mistakes" in out and "fall on flagged test images" in out
    # Run again: the finished fold runs are reused, not retrained.
    r = audit(run, AuditOptions(folds=3, epochs=2, batch_size=64, grid=12, data_dir=str(data), verify=False), log=print)
    assert "reusing" in capsys.readouterr().out and len(list((run / AUDIT_DIR).iterdir())) == 3
    assert r.test_errors_flagged <= r.test_errors
