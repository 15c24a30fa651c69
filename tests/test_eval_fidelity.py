"""FID / KID / precision-recall: equal to torch-fidelity's own numbers on the same inputs and weights.

Random-init Inception/VGG16 files in the official formats are loaded by the real code;
nothing about the metrics is mocked. Inception runs at 299 px on CPU, so sets are tiny.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity
from eval_support import isolated_caches, paintings, save_pngs, tiny_generator, weights_dir, write_dataset  # noqa: F401

from eval import weights as W
from eval.fidelity import choose_kid_subset_size, compute_fidelity, frechet_distance
from eval.samples import EvalInputError, FolderImages, GeneratedImages, TensorImages, load_reference
from gan import sampling


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("rank", [6, 2])  # full rank, and near-singular (rank 2 of 6 plus 1e-10 jitter)
def test_frechet_distance_matches_scipy_sqrtm(rank):
    rng = np.random.RandomState(rank)
    a, b = rng.randn(6, rank), rng.randn(6, rank)
    s1, s2 = a @ a.T + 1e-10 * np.eye(6), b @ b.T + 1e-10 * np.eye(6)
    mu1, mu2 = rng.randn(6), rng.randn(6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-5)


def test_frechet_distance_of_known_gaussians():
    # Isotropic Gaussians: d = |mu1 - mu2|^2 + k (s1 - s2)^2 in closed form.
    mu1, mu2 = np.zeros(4), np.full(4, 0.5)
    expected = 4 * 0.25 + 4 * (2.0 - 3.0) ** 2
    assert frechet_distance(mu1, 4.0 * np.eye(4), mu2, 9.0 * np.eye(4)) == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    dataset = write_dataset(paintings(4, seed=1), root / "dataset")
    generated = root / "generated"
    save_pngs(paintings(4, seed=2), generated)
    return dataset, generated


def test_fid_kid_equal_torch_fidelity_on_the_same_inputs(data, weights_dir, isolated_caches):
    dataset, generated = data
    reference = load_reference(dataset)
    # FID on Inception's 64-d layer: the same code path as pool3, without two 2048x2048 eigendecompositions
    # (about a minute on 2 cores); equality with torch-fidelity is what is under test.
    ours = compute_fidelity(
        FolderImages(generated), reference, ["fid", "kid"], seed=3, weights_dir=weights_dir, kid_subsets=10, fid_feature_layer="64"
    )
    inception = weights_dir / W.INCEPTION_V3.filename
    theirs = torch_fidelity.calculate_metrics(
        input1=str(generated),
        input2=str(dataset),
        fid=True,
        kid=True,
        cuda=False,
        verbose=False,
        cache=False,
        feature_extractor_weights_path=str(inception),
        kid_subset_size=4,
        kid_subsets=10,
        rng_seed=3,
        feature_layer_fid="64",
    )
    assert ours.metrics["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours.metrics["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert ours.metrics["fid"] > 0
    assert ours.kid_subset_size == 4 and "min(1000, 4 generated, 4 reference)" in ours.kid_subset_size_note
    assert ours.weights[0].sha256 == W.file_sha256(inception)
    # Reference statistics are cached under the dataset's content hash (and the weights' hash).
    cached = list((isolated_caches / "xdg" / "atelier" / "fidelity").glob(f"*{reference.content_sha256[:20]}*"))
    assert cached, "reference statistics were not cached"
    again = compute_fidelity(FolderImages(generated), reference, ["fid"], seed=3, weights_dir=weights_dir, fid_feature_layer="64")
    assert again.metrics["fid"] == pytest.approx(ours.metrics["fid"], rel=1e-6)


def test_generated_sample_i_is_generate_py_seed_first_plus_i():
    G, _ = tiny_generator()
    samples = GeneratedImages(G, 5, first_seed=7, psi=0.8, batch_size=2)
    assert list(samples.seeds) == [7, 8, 9, 10, 11] and len(samples) == 5
    for i in (4, 0, 3):  # any order: a batch is regenerated when needed
        alone = sampling.generate_images(G, [7 + i], psi=0.8, noise_mode="const")[0]
        # Same latent, same image; batching changes float rounding, so a rare pixel may differ by one level.
        diff = np.abs(samples[i].permute(1, 2, 0).numpy().astype(int) - alone.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    samples.retain(3, max_size=16)
    kept = samples.retained()
    assert kept.shape == (3, 3, 16, 16) and kept.dtype == torch.uint8
    with pytest.raises(IndexError):
        samples[5]


def test_generator_input_sees_the_same_images_as_generate_images(data, weights_dir, isolated_caches):
    dataset, _ = data
    G, _ = tiny_generator()
    reference = load_reference(dataset, expected_resolution=G.resolution)
    direct = compute_fidelity(G, reference, ["kid"], num_samples=4, seed=5, weights_dir=weights_dir, kid_subsets=5)
    # Sample i of an evaluation with seed 5 is generate.py's seed 5 + i.
    images = torch.from_numpy(np.stack(sampling.generate_images(G, range(5, 9)))).permute(0, 3, 1, 2)
    stored = compute_fidelity(TensorImages(images), reference, ["kid"], seed=5, weights_dir=weights_dir, kid_subsets=5)
    assert direct.metrics["kid_mean"] == pytest.approx(stored.metrics["kid_mean"], rel=1e-5, abs=1e-9)


def test_precision_recall_of_a_set_against_itself_is_perfect(data, tmp_path_factory, isolated_caches):
    import torchvision
    from eval_support import write_torchvision_weights

    folder = tmp_path_factory.mktemp("vgg")
    write_torchvision_weights(folder, W.VGG16, torchvision.models.vgg16)
    dataset, _ = data
    reference = load_reference(dataset)
    result = compute_fidelity(reference.images, reference, ["pr"], weights_dir=folder)
    assert result.metrics["precision"] == pytest.approx(1.0) and result.metrics["recall"] == pytest.approx(1.0)
    assert result.weights[0].file == W.VGG16.filename


def test_too_few_samples_for_the_requested_kid_subset():
    with pytest.raises(EvalInputError, match="too few samples for KID subset size 50: 10 generated and 6 reference"):
        choose_kid_subset_size(10, 6, requested=50)
    assert choose_kid_subset_size(5000, 300)[0] == 300


def test_too_few_generated_images_for_kid_is_a_clear_error(data, weights_dir, isolated_caches):
    dataset, _ = data
    one = TensorImages(paintings(1, seed=9))
    with pytest.raises(EvalInputError, match="too few samples for KID"):
        compute_fidelity(one, load_reference(dataset), ["kid"], weights_dir=weights_dir)


def test_dataset_of_another_resolution_is_refused(tmp_path):
    dataset = write_dataset(paintings(2, seed=1, size=16), tmp_path / "ds16")
    with pytest.raises(EvalInputError, match="16x16 but the generator makes 32x32"):
        load_reference(dataset, expected_resolution=32)


def test_missing_inception_weights_name_the_file(data, tmp_path, isolated_caches):
    dataset, generated = data
    with pytest.raises(W.MissingWeightsError, match=W.INCEPTION_V3.filename):
        compute_fidelity(FolderImages(generated), load_reference(dataset), ["fid"], weights_dir=tmp_path / "empty")
