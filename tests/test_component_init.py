"""The GMVAE's mixture initialised from a clustering of its codes (training/component_init.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from vaescope.training import component_init
from vaescope.training.cli import build_parser, configs_from_args
from vaescope.training.config import ConfigError, TrainConfig
from vaescope.training.data import load_dataset
from vaescope.training.metrics import cluster_accuracy
from vaescope.training.models import build_model
from vaescope.training.train import model_config_for, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mean_field_gmvae(digits, **overrides):
    return model_config_for(digits, **({"model_type": "gmvae", "arch": "mlp", "latent_dim": 4, "hidden_dim": 64,
                                        "options": {"z_given_y": False}} | overrides))


@pytest.mark.slow
def test_cluster_codes_recovers_separated_blobs() -> None:
    codes, truth = make_blobs(n_samples=600, n_features=8, centers=4, cluster_std=0.5, random_state=0)
    labels = component_init.cluster_codes(codes.astype(np.float32), 4, seed=0)
    assert labels.shape == (600,)
    assert cluster_accuracy(labels, truth, 4) == 1.0


def test_cluster_codes_keeps_the_most_balanced_mixture(monkeypatch) -> None:
    import sklearn.mixture
    import umap

    class Identity:  # stands in for UMAP: the test is about choosing among mixture fits
        def __init__(self, **kwargs: object) -> None:
            pass

        def fit_transform(self, codes: np.ndarray) -> np.ndarray:
            return codes

    balanced_start = 5
    fits = []

    class FakeMixture:  # start 5 splits 8 codes 4/4, every other start 7/1
        def __init__(self, k: int, covariance_type: str, random_state: int) -> None:
            self.start = random_state
            fits.append(random_state)

        def fit(self, codes: np.ndarray) -> FakeMixture:
            return self

        def predict(self, codes: np.ndarray) -> np.ndarray:
            return np.array([0, 1] * 4 if self.start == balanced_start else [0] * 7 + [1])

    monkeypatch.setattr(umap, "UMAP", Identity)
    monkeypatch.setattr(sklearn.mixture, "GaussianMixture", FakeMixture)
    labels = component_init.cluster_codes(np.zeros((8, 2), np.float32), 2, seed=0)
    assert labels.tolist() == [0, 1] * 4
    assert fits == list(range(component_init.GMM_RESTARTS))


def test_initialise_sets_priors_and_head_to_the_clusters(digits, monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model(mean_field_gmvae(digits)).eval()
    images = digits.train.images
    _, means, variances = component_init.encoder_features(model, images)
    kmeans = KMeans(10, n_init=3, random_state=0).fit(means.numpy())
    # UMAP is covered above; k-means on the same codes keeps this test fast and exact
    monkeypatch.setattr(component_init, "cluster_codes", lambda codes, k, seed: kmeans.predict(codes))
    done = component_init.initialise_components(model, images, seed=0)

    labels = torch.from_numpy(kmeans.predict(means.numpy()))  # the whole split fits in the sample
    assert sum(done.sizes) == len(images) and done.sizes == torch.bincount(labels, minlength=10).tolist()
    for c in range(10):
        members = labels == c
        torch.testing.assert_close(model.prior_mean[c], means[members].mean(0), atol=1e-5, rtol=1e-5)
        expected_var = means[members].var(0, unbiased=False) + variances[members].mean(0)
        torch.testing.assert_close(model.prior_logvar[c].exp(), expected_var, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        probs = model.encode(images.float() / 255).component_probs
    agreement = (probs.argmax(-1) == labels).float().mean().item()
    assert agreement == pytest.approx(done.head_agreement) and agreement > 0.95
    # codes of the mean-field posterior do not depend on y, so the init did not move them
    torch.testing.assert_close(component_init.encoder_features(model, images)[1], means)


def test_initialise_refuses_the_joint_posterior(digits) -> None:
    model = build_model(mean_field_gmvae(digits, options={"z_given_y": True}))
    with pytest.raises(ValueError, match="--z-given-y no"):
        component_init.initialise_components(model, digits.train.images, seed=0)


def test_training_with_component_init_records_it_and_checks_the_config(digits, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(component_init, "cluster_codes",
                        lambda codes, k, seed: KMeans(k, n_init=1, random_state=seed).fit_predict(codes))
    tcfg = TrainConfig(dataset="digits", epochs=2, eval_k=5)
    umap_at_1 = {"z_given_y": False, "component_init": "umap", "component_init_epoch": 1}
    result = train(mean_field_gmvae(digits, options=umap_at_1), tcfg, tmp_path / "run", dataset=digits,
                   show_progress=False)
    record = result.history[0]["component_init"]
    assert sum(record["sizes"]) == len(digits.train.images) and record["head_agreement"] > 0.9
    assert "component_init" not in result.history[1]
    with pytest.raises(ValueError, match="mean-field GMVAE"):
        mean_field_gmvae(digits, options=umap_at_1 | {"z_given_y": True})
    with pytest.raises(ValueError, match="must be below epochs"):
        train(mean_field_gmvae(digits, options=umap_at_1 | {"component_init_epoch": 2}), tcfg, tmp_path / "late",
              dataset=digits)
    with pytest.raises(ConfigError, match="component_init must be one of"):
        mean_field_gmvae(digits, options={"z_given_y": False, "component_init": "kmeans"})


@pytest.mark.slow
def test_refit_at_end_sets_the_final_mixture_from_the_trained_codes(digits, tmp_path, monkeypatch) -> None:
    clusterings = []  # (codes, labels) of each clustering, in order

    def kmeans(codes: np.ndarray, k: int, seed: int) -> np.ndarray:
        labels = KMeans(k, n_init=1, random_state=seed).fit_predict(codes)
        clusterings.append((codes.copy(), labels))
        return labels

    monkeypatch.setattr(component_init, "cluster_codes", kmeans)
    options = {"z_given_y": False, "component_init": "umap", "component_init_epoch": 1, "component_refit_at_end": True}
    tcfg = TrainConfig(dataset="digits", epochs=3, eval_k=5)
    result = train(mean_field_gmvae(digits, options=options), tcfg, tmp_path / "run", dataset=digits,
                   show_progress=False)
    assert [sorted(rec.keys() & {"component_init", "component_refit"}) for rec in result.history] == [
        ["component_init"], [], ["component_refit"]]
    assert sum(result.history[2]["component_refit"]["sizes"]) == len(digits.train.images)
    (first_codes, _), (final_codes, final_labels) = clusterings  # exactly two: the init and the refit
    assert not np.allclose(first_codes, final_codes)  # the codes trained on in between

    model = result.model.eval()
    _, means, _ = component_init.encoder_features(model, digits.train.images)
    torch.testing.assert_close(means.numpy(), final_codes)  # the refit clustered the final codes
    labels = torch.from_numpy(final_labels)
    for c in range(10):
        torch.testing.assert_close(model.prior_mean[c], means[labels == c].mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"also set component_init to umap \(--component-init umap\)"):
        mean_field_gmvae(digits, options={"z_given_y": False, "component_refit_at_end": True})


def test_cli_flags_reach_the_configs() -> None:
    parser = build_parser()
    args = parser.parse_args(["--dataset", "fashion-mnist", "--model", "gmvae", "--z-given-y", "no",
                              "--component-init", "umap", "--component-init-epoch", "5", "--component-refit-at-end"])
    model_kwargs, _ = configs_from_args(args, parser)  # the GMVAE's options, as every family's flags
    assert model_kwargs["options"] == {"z_given_y": False, "component_init": "umap", "component_init_epoch": 5,
                                       "component_refit_at_end": True}
    assert "options" not in configs_from_args(parser.parse_args(["--model", "gmvae"]), parser)[0]
    with pytest.raises(SystemExit):
        parser.parse_args(["--z-given-y", "maybe"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--component-init", "kmeans"])


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="numba's change shows only with 2+ cores")
def test_clustering_leaves_torch_threads_as_it_found_them() -> None:
    """Training runs pinned to one thread (OMP_NUM_THREADS=1, several side by side) must stay there
    after the UMAP in the initialisation: numba's OpenMP layer would leave them on every core."""
    # 4,200 codes: from 4,096 umap-learn finds neighbours with pynndescent (numba, parallel)
    codes = make_blobs(4200, n_features=4, centers=3, random_state=0)[0].astype(np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        component_init.cluster_codes(codes, 3, seed=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
