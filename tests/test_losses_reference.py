"""Each loss of affectube.train.losses against a reference formula written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectube.errors import ConfigError
from affectube.train import losses as L


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_ce_label_smoothing_matches_formula(rng, eps):
    logits = rng.normal(size=(16, 5))
    y = rng.integers(0, 5, 16)
    q = np.full((16, 5), eps / 5) + (1 - eps) * np.eye(5)[y]  # smoothed target distribution
    ref = -(q * _log_softmax(logits)).sum(1).mean()
    got = L.ce_loss(torch.tensor(logits), torch.tensor(y), label_smoothing=eps)
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_ce_class_weights_and_ignored_labels(rng):
    logits = rng.normal(size=(10, 3))
    y = np.array([0, 1, 2, 0, 0, -1, 1, 2, 0, -1])
    w = np.array([0.5, 2.0, 1.5])
    keep = y >= 0
    nll = -_log_softmax(logits[keep])[np.arange(keep.sum()), y[keep]]
    ref = (w[y[keep]] * nll).sum() / w[y[keep]].sum()
    got = L.ce_loss(torch.tensor(logits), torch.tensor(y), weight=torch.tensor(w))
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 0, 1, 1, 2])
    ref = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(L.balanced_class_weights(y, 3).numpy(), ref, rtol=1e-6)
    assert L.balanced_class_weights(np.array([0, 0, 1]), 3)[2] == 1.0  # absent class


def test_mse_ignores_missing_targets(rng):
    p, y = rng.normal(size=(8, 2)), rng.normal(size=(8, 2))
    y[3, 1] = np.nan
    ref = np.nanmean((p - y) ** 2)
    assert float(L.mse_loss(torch.tensor(p), torch.tensor(y))) == pytest.approx(ref, rel=1e-12)


def test_ccc_loss_is_one_minus_population_ccc(rng):
    y = rng.normal(size=(50, 2))
    p = 0.5 * y + rng.normal(scale=0.4, size=(50, 2))
    ref = []
    for d in range(2):
        cov = np.mean((y[:, d] - y[:, d].mean()) * (p[:, d] - p[:, d].mean()))
        ref.append(1 - 2 * cov / (y[:, d].var() + p[:, d].var() + (y[:, d].mean() - p[:, d].mean()) ** 2))
    got = L.ccc_loss(torch.tensor(p), torch.tensor(y))
    assert float(got) == pytest.approx(np.mean(ref), rel=1e-6)
    # and equals 1 - the metric module's CCC
    from affectube.eval.metrics import ccc

    assert float(got) == pytest.approx(1 - np.mean([ccc(y[:, d], p[:, d]) for d in range(2)]), rel=1e-6)
    # frames [B, T, D] are pooled over batch and time
    got3 = L.ccc_loss(torch.tensor(p).reshape(5, 10, 2), torch.tensor(y).reshape(5, 10, 2))
    assert float(got3) == pytest.approx(float(got), rel=1e-12)


def test_bins_index_and_centres():
    bins = L.Bins(4, -1.0, 1.0)
    y = torch.tensor([-1.0, -0.51, -0.5, 0.0, 0.49, 0.999, 1.0, 5.0, -5.0])
    assert bins.index(y).tolist() == [0, 0, 1, 2, 2, 3, 3, 3, 0]
    np.testing.assert_allclose(bins.centres().numpy(), [-0.75, -0.25, 0.25, 0.75])


def test_bin_ce_matches_formula(rng):
    k = 20
    logits = rng.normal(size=(12, 2, k))
    y = rng.uniform(-1, 1, size=(12, 2))
    idx = np.clip(np.floor((y + 1) / (2 / k)), 0, k - 1).astype(int)
    ref = -np.take_along_axis(_log_softmax(logits), idx[..., None], -1).mean()
    got = L.bin_ce_loss(torch.tensor(logits), torch.tensor(y), L.Bins(k))
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_ncce_matches_formula_and_weights_far_errors_more(rng):
    k = 10
    logits = rng.normal(size=(30, 2, k))
    y = rng.uniform(-1, 1, size=(30, 2))
    edges = np.linspace(-1, 1, k + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    idx = np.clip(np.floor((y + 1) / (2 / k)), 0, k - 1).astype(int)
    logp = _log_softmax(logits)
    onehot = np.eye(k)[idx]
    cost = 1 + np.abs(((onehot - np.exp(logp)) * centres).sum(-1))  # 1 + |sum_l K_l (Y_l - P_l)|
    ce = -np.take_along_axis(logp, idx[..., None], -1)[..., 0]
    ref = (cost * ce).mean()
    got = L.ncce_loss(torch.tensor(logits), torch.tensor(y), L.Bins(k))
    assert float(got) == pytest.approx(ref, rel=1e-10)
    # same CE on the true bin, but the wrong mass sits far away -> larger nCCE
    near = torch.full((1, 1, k), -10.0)
    far = near.clone()
    near[0, 0, [5, 6]] = 0.0
    far[0, 0, [5, 0]] = 0.0
    target = torch.tensor([[0.1]])  # bin 5
    assert float(L.bin_ce_loss(near, target, L.Bins(k))) == pytest.approx(float(L.bin_ce_loss(far, target, L.Bins(k))))
    assert float(L.ncce_loss(far, target, L.Bins(k))) > float(L.ncce_loss(near, target, L.Bins(k)))


def test_composite_is_the_weighted_sum(rng):
    torch.manual_seed(0)
    out = {"logits": torch.randn(6, 3), "reg": torch.randn(6, 1, 2), "bins": torch.randn(6, 1, 2, 8)}
    tgt = {"label": torch.tensor([0, 1, 2, 0, 1, -1]), "reg": torch.rand(6, 1, 2) * 2 - 1}
    weights = {"ccc": 0.5, "bin_ce": 0.25, "mse": 0.25, "ce": 1.0}
    loss = L.CompositeLoss(weights, "both", L.Bins(8), label_smoothing=0.1)
    total, parts = loss(out, tgt)
    ref = (0.5 * L.ccc_loss(out["reg"], tgt["reg"]) + 0.25 * L.bin_ce_loss(out["bins"], tgt["reg"], L.Bins(8))
           + 0.25 * L.mse_loss(out["reg"], tgt["reg"]) + L.ce_loss(out["logits"], tgt["label"], 0.1))
    assert float(total) == pytest.approx(float(ref), rel=1e-6)
    assert set(parts) == set(weights) and loss.needs_bins


def test_composite_refuses_mismatched_tasks():
    with pytest.raises(ConfigError, match="continuous loss"):
        L.CompositeLoss({"ce": 1.0, "ccc": 1.0}, "categorical", L.Bins(4))
    with pytest.raises(ConfigError, match="needs a positive-weight continuous"):
        L.CompositeLoss({"ce": 1.0}, "both", L.Bins(4))
    with pytest.raises(ConfigError, match="unknown loss"):
        L.CompositeLoss({"focal": 1.0}, "categorical", L.Bins(4))


def test_losses_have_gradients(rng):
    p = torch.tensor(rng.normal(size=(8, 1)), requires_grad=True)
    b = torch.tensor(rng.normal(size=(8, 1, 5)), requires_grad=True)
    y = torch.tensor(rng.uniform(-1, 1, size=(8, 1)))
    (L.ccc_loss(p, y) + L.mse_loss(p, y) + L.ncce_loss(b, y, L.Bins(5))).backward()
    assert p.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
