"""Permutation test against chance and bootstrap interval (affectube.eval.stats)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from affectube.eval import stats as S

CLASSES = ["a", "b", "c"]


def _table(rng, subjects=6, per_class=3, skill=1.0, clips=2, flip=None):
    """Clip rows: with probability ``skill`` a video's probabilities point at its true class, else at a random one."""
    rows = []
    for s in range(subjects):
        for c in CLASSES:
            for i in range(per_class):
                vid = f"s{s}_{c}_{i}"
                guess = c if rng.random() < skill else CLASSES[rng.integers(len(CLASSES))]
                for k in range(clips):
                    prob = np.full(len(CLASSES), 0.1)
                    prob[CLASSES.index(guess)] = 0.8
                    rows.append({"fold": s, "subject": f"s{s}", "video_id": vid, "dataset": "d", "clip": k, "y_true": c,
                                 **{f"prob_{x}": p for x, p in zip(CLASSES, prob)}})
    return pd.DataFrame(rows)


def test_perfect_predictor_is_significant_and_random_is_not():
    rng = np.random.default_rng(0)
    perfect = S.experiment_stats([_table(rng)], "uar", permutations=1000, resamples=500, seed=0)
    assert perfect.value == 1.0
    assert perfect.p_value < 0.01 and perfect.p_value == pytest.approx(1 / 1001)
    assert perfect.chance == pytest.approx(1 / 3, abs=0.03)  # UAR chance = 1/K
    assert perfect.unit == "subject" and perfect.units == 6
    random = S.experiment_stats([_table(np.random.default_rng(0), skill=0.0)], "uar", permutations=1000, resamples=200)
    assert random.p_value > 0.05 and abs(random.value - 1 / 3) < 0.15


def test_p_values_of_random_predictors_are_calibrated():
    # under the null, p < 0.05 happens in about 5% of experiments, not more
    ps = np.array([S.experiment_stats([_table(np.random.default_rng(100 + s), skill=0.0)], "uar", permutations=1000,
                                      resamples=1, seed=s).p_value for s in range(25)])
    assert (ps < 0.05).mean() <= 0.15 and (ps > 0.5).mean() >= 0.3, np.sort(ps)


def test_fast_scores_equal_the_metrics_module():
    from affectube.eval import metrics as M

    rng = np.random.default_rng(9)
    for _ in range(20):
        y, p = rng.integers(0, 4, 30), rng.integers(0, 5, 30)
        for name in ("uar", "accuracy", "war", "f1_macro"):
            assert S._categorical_score(name)(y, p) == pytest.approx(M.CATEGORICAL[name][0](y, p), abs=1e-12), name


def test_permutation_is_seeded_and_within_subject():
    rng = np.random.default_rng(1)
    table = _table(rng, skill=0.6)
    a = S.experiment_stats([table], "uar", permutations=1000, resamples=300, seed=7)
    b = S.experiment_stats([table], "uar", permutations=1000, resamples=300, seed=7)
    assert a.p_value == b.p_value and a.ci_low == b.ci_low and a.ci_high == b.ci_high
    pooled = S.prepare([table], "uar")
    perm = S._within_subject_perm(S._groups(pooled.subjects), len(pooled.subjects), np.random.default_rng(0))
    assert (pooled.subjects[perm] == pooled.subjects).all()  # labels never move to another subject
    assert (perm != np.arange(len(perm))).any()


def test_one_class_per_subject_gives_p_one():
    # each subject shows one class only: permuting within subject cannot change anything
    rng = np.random.default_rng(2)
    table = _table(rng)
    table["subject"] = table["video_id"].str.split("_").str[1]  # subject = class
    st = S.experiment_stats([table], "uar", permutations=1000, resamples=100)
    assert st.p_value == 1.0 and "cannot change" in st.note


def test_bootstrap_interval_covers_the_known_value():
    # 20 subjects with per-subject accuracy ~ 0.7: the 95% interval of the pooled accuracy covers 0.7
    rng = np.random.default_rng(3)
    table = _table(rng, subjects=20, per_class=4, skill=0.55)  # accuracy = 0.55 + 0.45/3 = 0.70
    st = S.experiment_stats([table], "accuracy", permutations=1000, resamples=1000, seed=0)
    assert st.ci_low < 0.70 < st.ci_high
    assert st.ci_low <= st.value <= st.ci_high
    assert 0.02 < st.ci_high - st.ci_low < 0.3
    # and a perfect predictor has a degenerate interval at 1
    perfect = S.experiment_stats([_table(rng)], "uar", permutations=1000, resamples=200)
    assert perfect.ci_low == perfect.ci_high == 1.0


def test_single_subject_bootstraps_videos_and_says_so():
    rng = np.random.default_rng(4)
    table = _table(rng, subjects=1, per_class=8, skill=0.8)
    st = S.experiment_stats([table], "uar", permutations=1000, resamples=500)
    assert st.unit == "video" and st.units == 24
    assert "one test subject" in st.note
    assert st.p_value < 0.01 and st.ci_low < st.value < st.ci_high or st.ci_high == st.value


def test_seeds_are_averaged_and_share_the_permutation():
    rng = np.random.default_rng(5)
    good, bad = _table(rng, skill=1.0), _table(rng, skill=0.0)
    both = S.experiment_stats([good, bad], "uar", permutations=1000, resamples=200)
    single = [S.experiment_stats([t], "uar", permutations=200, resamples=50).value for t in (good, bad)]
    assert both.seeds == 2 and both.value == pytest.approx(np.mean(single))


def test_continuous_ccc():
    rng = np.random.default_rng(6)
    rows = []
    for s in range(5):
        for v in range(8):
            y = rng.uniform(-1, 1)
            rows.append({"fold": s, "subject": f"s{s}", "video_id": f"s{s}_{v}", "dataset": "d", "clip": 0,
                         "true_valence": y, "pred_valence": y + 0.1 * rng.standard_normal()})
    table = pd.DataFrame(rows)
    st = S.experiment_stats([table], "ccc", permutations=1000, resamples=300)
    assert st.value > 0.9 and st.p_value < 0.01 and abs(st.chance) < 0.1
    shuffled = table.assign(pred_valence=rng.permutation(table["pred_valence"].to_numpy()))
    assert S.experiment_stats([shuffled], "ccc", permutations=1000, resamples=100).p_value > 0.05
    # lower-is-better metrics count the other tail
    assert S.experiment_stats([table], "rmse", permutations=1000, resamples=100).p_value < 0.01
    assert math.isnan(S.experiment_stats([table], "uar").p_value)  # no classes: no test, said so
