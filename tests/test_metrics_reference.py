"""Every metric of affectube.eval.metrics against sklearn / scipy / a closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from affectube.eval import metrics as M

CLASSES = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(params=[0, 1, 2])
def labels(request):
    rng = np.random.default_rng(request.param)
    y = rng.choice(CLASSES, size=60, p=[0.5, 0.2, 0.2, 0.1])
    p = np.where(rng.random(60) < 0.6, y, rng.choice(CLASSES, size=60))
    return y, p


def test_categorical_metrics_match_sklearn(labels):
    y, p = labels
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert M.uar(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert M.uar(y, p) == pytest.approx(skm.recall_score(y, p, average="macro", labels=np.unique(y)))
    assert M.war(y, p) == pytest.approx(skm.recall_score(y, p, average="weighted"))
    assert M.war(y, p) == pytest.approx(M.accuracy(y, p))
    assert M.f1_macro(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert M.f1_weighted(y, p) == pytest.approx(skm.f1_score(y, p, average="weighted"))
    np.testing.assert_array_equal(M.confusion_matrix(y, p, CLASSES), skm.confusion_matrix(y, p, labels=CLASSES))


def test_uar_differs_from_war_on_imbalanced_data():
    y = ["a"] * 8 + ["b"] * 2
    p = ["a"] * 10  # always the majority class
    assert M.war(y, p) == pytest.approx(0.8)
    assert M.uar(y, p) == pytest.approx(0.5)


def test_f1_counts_predicted_only_classes_like_sklearn():
    y = ["a", "a", "b", "b"]
    p = ["a", "c", "b", "b"]  # 'c' is never true
    assert M.f1_macro(y, p) == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))


def _ccc_closed_form(y, p):
    y, p = np.asarray(y, float), np.asarray(p, float)
    cov = np.cov(y, p, ddof=0)[0, 1]
    return 2 * cov / (np.var(y) + np.var(p) + (y.mean() - p.mean()) ** 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuous_metrics_match_references(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(0.2, 0.5, 200)
    p = 0.7 * y + rng.normal(0.1, 0.3, 200)
    assert M.ccc(y, p) == pytest.approx(_ccc_closed_form(y, p), rel=1e-12)
    assert M.pearson(y, p) == pytest.approx(stats.pearsonr(y, p)[0], rel=1e-10)
    assert M.rmse(y, p) == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert M.mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)


def test_ccc_uses_population_moments_and_known_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.ccc(y, y) == pytest.approx(1.0)
    assert M.ccc(y, -y) == pytest.approx(-1.0 * np.var(y) * 2 / (2 * np.var(y) + (2 * y.mean()) ** 2))
    # shift by 1: var 1.25 each (ddof 0), cov 1.25, bias 1 -> 2.5 / 3.5
    assert M.ccc(y, y + 1) == pytest.approx(2.5 / 3.5)
    # a ddof=1 covariance with ddof=0 variances (the mixed definition) would give a different value
    mixed = 2 * np.cov(y, y + 1, ddof=1)[0, 1] / (2 * np.var(y) + 1)
    assert M.ccc(y, y + 1) != pytest.approx(mixed)
    assert math.isnan(M.ccc([1.0], [1.0]))
    assert M.ccc([1, 2, np.nan, 4], [1, 2, 3, 4]) == pytest.approx(1.0)  # NaN targets ignored


def test_higher_is_better():
    assert M.higher_is_better("uar") and M.higher_is_better("ccc_valence") and M.higher_is_better("frame_ccc")
    assert not M.higher_is_better("rmse") and not M.higher_is_better("frame_mae_arousal")
    with pytest.raises(KeyError):
        M.higher_is_better("nope")


def _predictions(rng, n_videos=12, clips=2):
    rows = []
    for v in range(n_videos):
        y = CLASSES[v % 4]
        for c in range(clips):
            probs = rng.dirichlet(np.ones(4))
            rows.append({"fold": 0, "subject": f"s{v % 3}", "video_id": f"v{v}", "dataset": "d", "clip": c, "y_true": y,
                         "y_pred": CLASSES[int(probs.argmax())], **{f"prob_{k}": probs[i] for i, k in enumerate(CLASSES)},
                         "true_valence": 0.1 * v, "pred_valence": 0.1 * v + rng.normal(0, 0.1)})
    return pd.DataFrame(rows)


def test_evaluate_table_averages_clips_then_scores_videos():
    rng = np.random.default_rng(0)
    table = _predictions(rng)
    out = M.evaluate_table(table)
    video = table.groupby("video_id", sort=False).mean(numeric_only=True)
    y_true = table.groupby("video_id", sort=False)["y_true"].first()
    y_pred = np.array(CLASSES)[video[[f"prob_{k}" for k in CLASSES]].to_numpy().argmax(1)]
    assert out["videos"] == 12
    assert out["uar"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert out["ccc_valence"] == pytest.approx(_ccc_closed_form(video["true_valence"], video["pred_valence"]))
    assert out["ccc"] == out["ccc_valence"]
    assert np.array(out["confusion_matrix"]).sum() == 12
    json.dumps(out)  # serialisable


def test_evaluate_frames():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(100, 2))
    frames = pd.DataFrame({"fold": 0, "subject": "s", "video_id": "v", "time": np.arange(100) / 25,
                           "true_valence": t[:, 0], "pred_valence": t[:, 0] * 0.5,
                           "true_arousal": t[:, 1], "pred_arousal": t[:, 1] + 0.2})
    out = M.evaluate_frames(frames)
    assert out["frames"] == 100
    assert out["frame_ccc_valence"] == pytest.approx(_ccc_closed_form(t[:, 0], t[:, 0] * 0.5))
    assert out["frame_rmse_arousal"] == pytest.approx(0.2)
    assert out["frame_ccc"] == pytest.approx((out["frame_ccc_valence"] + out["frame_ccc_arousal"]) / 2)


def test_pearson_of_a_constant_prediction_is_nan_up_to_float_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 50)
    const = np.full(50, 0.3127, dtype=np.float32).astype(np.float64)
    assert math.isnan(M.pearson(y, const))
    # float noise on a constant output (a model that predicts one value): still no correlation to report
    noisy = const + rng.normal(0, 1e-9, 50)
    assert noisy.std() > 0 and math.isnan(M.pearson(y, noisy)) and math.isnan(M.pearson(noisy, y))
    # a small but real spread is kept
    small = 0.3 + 1e-3 * y
    assert M.pearson(y, small) == pytest.approx(1.0)
