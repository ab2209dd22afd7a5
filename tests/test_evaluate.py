import numpy as np
import pytest

from fmnist.reporting.evaluate import confusion_matrix, per_class_metrics
from fmnist.runtime.calibration import calibration_bins, expected_calibration_error


def test_confusion_and_per_class_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    cm = confusion_matrix(labels, preds, k=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    pc = per_class_metrics(cm)
    assert pc[0]["precision"] == pytest.approx(0.5) and pc[0]["recall"] == pytest.approx(0.5)
    assert pc[1]["precision"] == pytest.approx(2 / 3) and pc[1]["recall"] == 1.0
    assert pc[1]["f1"] == pytest.approx(0.8) and pc[2]["f1"] == 0.0 and pc[2]["support"] == 1


def test_ece_zero_when_confidence_equals_accuracy_and_large_when_overconfident():
    probs = np.zeros((100, 10))
    probs[:, 0] = 0.8
    probs[:, 1] = 0.2
    labels = np.array([0] * 80 + [1] * 20)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    over = np.zeros((100, 10))
    over[:, 0] = 1.0
    assert expected_calibration_error(over, labels) == pytest.approx(0.2)
    b = calibration_bins(probs, labels)
    assert b["count"].sum() == 100
