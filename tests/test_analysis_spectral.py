"""Spectral metrics on matrices whose singular values are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optirep.analysis import spectral as sp


def _with_spectrum(s, out, inp, seed=0):
    """A matrix (out, inp) = U diag(s) V^T with random orthonormal U, V: its singular values are s."""
    g = np.random.default_rng(seed)
    u, _ = np.linalg.qr(g.standard_normal((out, out)))
    v, _ = np.linalg.qr(g.standard_normal((inp, out)))
    return (u * np.asarray(s, dtype=float)) @ v.T


def _rotation(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def test_identity_has_full_rank_under_both_definitions():
    eye = torch.eye(7)
    assert sp.seed_effective_rank(eye) == pytest.approx(7.0, rel=1e-6)
    assert sp.roy_vetterli_erank(eye) == pytest.approx(7.0, rel=1e-5)
    assert sp.seed_topk_concentration(eye, k=5) == pytest.approx(5 / 7, rel=1e-6)
    assert sp.topk_energy(eye, 1) == pytest.approx(1 / 7)


def test_rank_one_has_rank_one_under_both_definitions():
    g = torch.Generator().manual_seed(0)
    w = torch.outer(torch.randn(6, generator=g), torch.randn(9, generator=g))
    assert sp.seed_effective_rank(w) == pytest.approx(1.0, abs=1e-5)
    # RankMe's eps adds ~ -len(S) * eps * log(eps) ~ 1e-5 to the entropy
    assert sp.roy_vetterli_erank(w) == pytest.approx(1.0, abs=2e-5)
    assert sp.seed_topk_concentration(w, k=1) == pytest.approx(1.0, abs=1e-6)
    assert sp.topk_energy(w, 1) == pytest.approx(1.0, abs=1e-12)


def test_diag_3_1_hand_computed():
    w = torch.diag(torch.tensor([3.0, 1.0]))
    # (3 + 1)^2 / (9 + 1)
    assert sp.seed_effective_rank(w) == pytest.approx(1.6)
    # 3 / (3 + 1)
    assert sp.seed_topk_concentration(w, k=1) == pytest.approx(0.75)
    # p = (0.75, 0.25): H = 0.75 ln(4/3) + 0.25 ln 4 = 0.5623351446; exp(H) = 1.7547654
    assert sp.roy_vetterli_erank(w) == pytest.approx(1.7547654, rel=1e-6)
    assert sp.roy_vetterli_erank(w, eps=0.0) == pytest.approx(math.exp(0.75 * math.log(4 / 3) + 0.25 * math.log(4)))
    # 9 / (9 + 1)
    assert sp.topk_energy(w, 1) == pytest.approx(0.9)
    assert sp.topk_energy(w, 5) == pytest.approx(1.0)


def test_the_two_effective_ranks_differ_on_a_generic_matrix():
    # The seed's participation ratio is not Roy-Vetterli: a test that both exist separately.
    w = _with_spectrum([4.0, 2.0, 1.0], 3, 8)
    assert sp.seed_effective_rank(w) == pytest.approx(49 / 21)
    assert abs(sp.seed_effective_rank(w) - sp.roy_vetterli_erank(w)) > 0.1


def test_top5_concentration_of_10x512_with_known_spectrum():
    s = np.arange(10, 0, -1, dtype=float)  # 10, 9, ..., 1
    w = torch.tensor(_with_spectrum(s, 10, 512), dtype=torch.float32)
    np.testing.assert_allclose(sp.seed_singular_values(w), s, rtol=1e-5)
    assert sp.seed_topk_concentration(w, k=5) == pytest.approx(40 / 55, rel=1e-6)
    assert sp.seed_effective_rank(w) == pytest.approx(55**2 / 385, rel=1e-6)
    assert sp.topk_energy(w, 5) == pytest.approx(330 / 385, rel=1e-6)
    assert sp.topk_energy(s, 10) == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 250.0])
def test_invariant_to_scaling(scale):
    w = _with_spectrum([5.0, 3.0, 2.0, 0.5], 4, 16)
    for f in (sp.seed_effective_rank, sp.seed_topk_concentration, sp.roy_vetterli_erank,
              lambda m: sp.topk_energy(m, 1)):
        assert f(w * scale) == pytest.approx(f(w), rel=1e-9)


def test_invariant_to_orthogonal_rotations():
    w = _with_spectrum([5.0, 3.0, 2.0, 0.5, 0.1], 5, 12, seed=3)
    rotated = _rotation(5, 1) @ w @ _rotation(12, 2)
    assert not np.allclose(rotated, w)
    for f in (sp.seed_effective_rank, sp.seed_topk_concentration, sp.roy_vetterli_erank,
              lambda m: sp.topk_energy(m, 5)):
        assert f(rotated) == pytest.approx(f(w), rel=1e-9)


def test_conv_kernel_is_reshaped_to_out_by_rest():
    k = torch.randn(8, 3, 3, 3)
    np.testing.assert_allclose(sp.seed_singular_values(k),
                               torch.linalg.svdvals(k.reshape(8, 27)).double().numpy(), rtol=1e-6)
    assert len(sp.singular_values(k)) == 8


def test_seed_metrics_bundle_and_degenerate_inputs():
    out = sp.seed_metrics(torch.diag(torch.tensor([3.0, 1.0])))
    assert out["shape"] == [2, 2]
    assert out["singular_values"] == pytest.approx([3.0, 1.0])
    assert out["seed_effective_rank"] == pytest.approx(1.6)
    assert out["seed_top5_concentration"] == pytest.approx(1.0)
    zero, nan = torch.zeros(3, 4), torch.full((3, 4), float("nan"))
    for bad in (zero, nan):
        assert math.isnan(sp.seed_effective_rank(bad))
        assert math.isnan(sp.seed_topk_concentration(bad))
        assert math.isnan(sp.roy_vetterli_erank(bad))
        assert math.isnan(sp.topk_energy(bad, 1))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        sp.seed_topk_concentration(torch.eye(3), k=0)
    with pytest.raises(ValueError, match="must be non-negative"):
        sp.roy_vetterli_erank(np.array([1.0, -1.0]))


def test_feature_metrics_centring():
    g = np.random.default_rng(0)
    # 3 zero-mean, orthogonal, equal-norm directions (spectrum exactly 10, 10, 10, 0, ...) plus a
    # large offset shared by every sample
    z = g.standard_normal((4000, 3))
    q, _ = np.linalg.qr(z - z.mean(0))
    basis = _rotation(16, 5)[:3]
    feats = 10.0 * q @ basis + 50.0
    centred = sp.feature_metrics(feats, center=True)
    raw = sp.feature_metrics(feats, center=False)
    # 13 zero singular values each add -eps*log(eps) = 1.6e-6 to the entropy
    assert centred["erank"] == pytest.approx(3.0, abs=1e-4)
    assert centred["top5_energy"] == pytest.approx(1.0, abs=1e-9)
    assert centred["top1_energy"] == pytest.approx(1 / 3, rel=1e-9)
    # without centring the offset is one dominant direction
    assert raw["top1_energy"] > 0.99
    assert raw["erank"] < 1.5
    assert centred["centered"] is True and raw["centered"] is False
    assert (centred["n"], centred["dim"], centred["samples_per_dim"]) == (4000, 16, 250.0)
    with pytest.raises(ValueError, match=r"features must be a 2-D array \[N, D\], got shape \(5,\)"):
        sp.feature_metrics(np.ones(5))


# --------------------------------------------------------------------------------------------------
# optirep analyze RUN_DIR: the metrics above, read from a synthetic run directory
# --------------------------------------------------------------------------------------------------
import json  # noqa: E402

from torch import nn  # noqa: E402

from optirep.analysis import run as analysis_run  # noqa: E402

HEAD_S = [4.0, 3.0, 2.0, 1.0]


def _make_run(path, diverged=False, with_model=True, features=True, final_linear_key=None):
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor(_with_spectrum(HEAD_S, 4, 32, seed=7), dtype=torch.float32))
    if with_model:
        torch.save(model.state_dict(), path / "model.pt")
    if features:
        z = np.random.default_rng(0).standard_normal((600, 2))
        q, _ = np.linalg.qr(z - z.mean(0))
        feats = (q * [3.0, 1.0]) @ _rotation(32, 9)[:2] + 1.0  # centred spectrum (3, 1, 0, ...)
        np.savez(path / "features.npz", features=feats.astype(np.float32), labels=np.zeros(600, int))
    metrics = {"experiment": "t", "task": "clf", "label": "adamw", "optimizer": "adamw", "seed": 0,
               "diverged": diverged, "final_test": math.nan if diverged else 0.9}
    if final_linear_key is not None:
        metrics["final_linear_key"] = final_linear_key
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps({"seed": 0}))
    return path


def test_analyze_run_reads_the_last_linear_weight_and_the_features(tmp_path):
    out = analysis_run.analyze_run(_make_run(tmp_path / "run"))
    # the last 2-D '*.weight': BatchNorm's weight is 1-D, so the head "3.weight"
    assert (out["final_linear_key"], out["final_linear_key_source"]) == ("3.weight", "last_2d_weight")
    assert out["final_linear_shape"] == [4, 32]
    assert out["fc_singular_values"] == pytest.approx(HEAD_S, rel=1e-5)
    assert out["seed_effective_rank"] == pytest.approx(10**2 / 30, rel=1e-5)
    assert out["seed_top5_concentration"] == pytest.approx(1.0)
    assert out["fc_top1_energy"] == pytest.approx(16 / 30, rel=1e-5)
    assert out["feature_top1_energy"] == pytest.approx(0.9, rel=1e-5)
    # spectrum (3, 1) plus 30 zeros: RankMe's eps and float32 rounding of the stored features
    # each add ~1e-4 to exp(H(0.75, 0.25)) = 1.7547654
    assert out["feature_erank"] == pytest.approx(1.7547654, abs=5e-4)
    assert out["feature_centered"] is True and out["has_features"] is True and out["diverged"] is False
    raw = analysis_run.analyze_run(tmp_path / "run", center=False)
    assert raw["feature_top1_energy"] > 0.9 and raw["feature_centered"] is False


def test_analyze_run_uses_the_recorded_final_linear_key(tmp_path):
    out = analysis_run.analyze_run(_make_run(tmp_path / "run", final_linear_key="0.weight"))
    assert (out["final_linear_key"], out["final_linear_key_source"]) == ("0.weight", "recorded")
    assert out["final_linear_shape"] == [32, 16]
    with pytest.raises(KeyError, match=r"final_linear_key 'fc.weight' is not in model.pt; 2-D tensors there: \['0.weight', '3.weight'\]"):
        analysis_run.analyze_run(_make_run(tmp_path / "bad", final_linear_key="fc.weight"))


def test_analyze_run_missing_pieces(tmp_path):
    div = analysis_run.analyze_run(_make_run(tmp_path / "div", diverged=True, with_model=False, features=False))
    assert div["diverged"] is True and div["has_features"] is False
    assert math.isnan(div["seed_effective_rank"]) and math.isnan(div["feature_erank"])
    assert math.isnan(div["fc_top10_energy"])
    assert "final_linear_key" not in div and "feature_n" not in div  # no nulls for the report layer
    assert None not in div.values()
    lm = analysis_run.analyze_run(_make_run(tmp_path / "lm", features=False))
    assert lm["seed_effective_rank"] == pytest.approx(10**2 / 30, rel=1e-5) and math.isnan(lm["feature_erank"])
    with pytest.raises(FileNotFoundError, match="model.pt not found, and metrics.json does not say the run diverged"):
        analysis_run.analyze_run(_make_run(tmp_path / "nomodel", with_model=False))
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.json not found: the run has not finished"):
        analysis_run.analyze_run(tmp_path / "unfinished")


def test_analyze_cli_writes_json_atomically(tmp_path, capsys):
    run_dir = _make_run(tmp_path / "run", diverged=False)
    target = tmp_path / "analysis" / "clf" / "adamw" / "seed0.json"
    assert analysis_run.main([str(run_dir), "--out", str(target)]) == 0
    assert [p.name for p in target.parent.iterdir()] == ["seed0.json"]  # no temp file left
    data = json.loads(target.read_text())
    assert data["seed_effective_rank"] == pytest.approx(10**2 / 30, rel=1e-5)
    assert data == json.loads(json.dumps(analysis_run.analyze_run(run_dir)))
    div = _make_run(tmp_path / "div", diverged=True, with_model=False, features=False)
    assert analysis_run.main([str(div), "--out", str(tmp_path / "div.json")]) == 0
    assert "NaN" in (tmp_path / "div.json").read_text()
    assert analysis_run.main([str(run_dir), "--no-center"]) == 0
    assert json.loads(capsys.readouterr().out)["feature_centered"] is False
