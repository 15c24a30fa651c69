"""LPIPS diversity and the memorisation check on synthetic paintings, with random-init backbones.

The LPIPS linear layers are the lpips package's real ones; only the AlexNet backbone (and
Inception) are random. Random conv features still tell a copy from a different picture.
"""

import numpy as np
import pytest
import torch
from eval_support import isolated_caches, jpeg_recompressed, paintings, slightly_cropped, weights_dir, write_dataset  # noqa: F401  (fixtures)
from PIL import Image

from eval import weights as W
from eval.evaluate import EvalOptions, evaluate
from eval.features import LpipsEmbedder, inception_extractor, inception_features, lpips_model, squared_distances
from eval.lpips_diversity import compute_diversity
from eval.memorisation import Measure, check_memorisation
from eval.report import WeightsUsed

USED = WeightsUsed("test", "x", "0")


@pytest.fixture(scope="module")
def lpips_embedder(weights_dir):
    model, _ = lpips_model("alex", weights_dir)
    return LpipsEmbedder(model, resolution=64)


def test_lpips_backbone_comes_from_our_file(weights_dir):
    model, path = lpips_model("alex", weights_dir)
    state = W.load_state_dict(path)
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").weight, state["features.10.weight"])


def test_embedding_distance_equals_lpips_forward(lpips_embedder):
    images = paintings(3, seed=4, size=64)
    embedded = lpips_embedder.embed(images)
    x = images.float() / 127.5 - 1
    expected = lpips_embedder.model(x[[0, 0, 1]], x[[1, 2, 2]]).flatten().double()
    got = squared_distances(embedded, embedded)[[0, 0, 1], [1, 2, 2]]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_lpips_diversity_is_zero_for_identical_samples_and_larger_for_varied(lpips_embedder):
    same = paintings(1, seed=3).repeat(6, 1, 1, 1)
    varied = paintings(6, seed=3)
    flat = compute_diversity(same, lpips_embedder, USED, seed=0)
    rich = compute_diversity(varied, lpips_embedder, USED, seed=0, reference=paintings(8, seed=5))
    assert flat.lpips_diversity == pytest.approx(0.0, abs=1e-5)
    assert rich.lpips_diversity > 0.05 and rich.num_pairs == 15
    assert rich.reference_lpips_diversity is not None and rich.num_reference == 6


def test_memorisation_flags_planted_copies_and_nothing_else(lpips_embedder, weights_dir, tmp_path):
    train = paintings(8, seed=1)
    planted = torch.stack([train[0], train[1].flip(-1), jpeg_recompressed(train[2]), slightly_cropped(train[3])])
    distinct = paintings(4, seed=2)
    samples = torch.cat([planted, distinct])
    extractor = inception_extractor(weights_dir / W.INCEPTION_V3.filename)
    names = [f"{i:05d}.png" for i in range(8)]
    result = check_memorisation(
        samples,
        train,
        names,
        lpips_measure=Measure("lpips", lpips_embedder.embed, True),
        inception_measure=Measure("inception", lambda x: inception_features(extractor, x), False),
        weights=[USED],
        seed=0,
        lpips_resolution=64,
        worst_k=5,
        grid_path=tmp_path / "nn.png",
    )
    flagged = {n.sample for n in result.worst if n.flagged}
    assert flagged == {0, 1, 2, 3}
    assert result.num_flagged == 4 and result.flagged_fraction == pytest.approx(0.5)
    by_sample = {n.sample: n for n in result.worst}
    assert by_sample[0].lpips_nearest == "00000.png" and by_sample[0].lpips_distance == pytest.approx(0, abs=1e-6)
    assert by_sample[1].lpips_nearest == "00001.png (flipped)"
    assert by_sample[2].lpips_nearest == "00002.png" and by_sample[3].lpips_nearest == "00003.png"
    with Image.open(result.grid) as grid:
        assert grid.width == 2 * 128 + 12 and grid.height > 5 * 128


def test_distinct_samples_are_not_flagged(lpips_embedder):
    result = check_memorisation(
        paintings(8, seed=7),
        paintings(8, seed=1),
        [str(i) for i in range(8)],
        lpips_measure=Measure("lpips", lpips_embedder.embed, True),
        weights=[USED],
        seed=0,
        lpips_resolution=64,
    )
    assert result.num_flagged == 0 and result.flagged_fraction == 0.0


def test_evaluate_runs_lpips_metrics_on_a_samples_folder(weights_dir, isolated_caches, tmp_path):
    from eval_support import save_pngs

    from eval.samples import FolderImages

    dataset = write_dataset(paintings(6, seed=1), tmp_path / "ds")
    save_pngs(torch.cat([paintings(1, seed=1), paintings(3, seed=8)]), tmp_path / "samples")
    options = EvalOptions(metrics=["lpips_div"], weights_dir=str(weights_dir), lpips_resolution=64)
    report = evaluate(dataset, options, samples=FolderImages(tmp_path / "samples"))
    assert report.diversity.num_samples == 4 and report.diversity.weights[0].file == W.ALEXNET.filename
    assert report.fidelity is None and report.memorisation is None


def test_grid_names_columns_real_works_and_marks_flagged_rows(lpips_embedder, tmp_path):
    from eval.memorisation import FLAG_COLOUR

    train = paintings(6, seed=1)
    samples = torch.cat([train[:1], paintings(2, seed=9)])  # one exact copy, two new works
    result = check_memorisation(
        samples,
        train,
        [f"work{i}.png" for i in range(6)],
        lpips_measure=Measure("lpips", lpips_embedder.embed, True),
        weights=[USED],
        seed=0,
        lpips_resolution=64,
        grid_path=tmp_path / "nn.png",
        sample_seeds=[10, 11, 12],
    )
    assert result.worst[0].seed == 10 and result.worst[0].flagged and result.num_flagged == 1
    with Image.open(result.grid) as image:
        grid = np.asarray(image.convert("RGB"))
    size = 128
    row_height = 2 * 12 + size + 4
    red = np.all(grid == FLAG_COLOUR, axis=-1)
    rows = [red[16 + r * row_height : 16 + (r + 1) * row_height] for r in range(3)]
    assert rows[0].sum() > 2 * size  # the copy's row: red caption and frame
    assert rows[1].sum() == 0 and rows[2].sum() == 0
    assert (grid[:14] < 128).any()  # the column header is drawn


def test_grid_rows_of_a_samples_folder_are_named_by_file(lpips_embedder, tmp_path):
    from eval import memorisation

    drawn = []
    real_pairs_grid = memorisation.pairs_grid

    def spy(samples, train, nearest, order, captions):
        drawn.extend(captions)
        return real_pairs_grid(samples, train, nearest, order, captions)

    train = paintings(4, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memorisation, "pairs_grid", spy)
        check_memorisation(
            train[:2],
            train,
            [f"work{i}.png" for i in range(4)],
            lpips_measure=Measure("lpips", lpips_embedder.embed, True),
            weights=[USED],
            seed=0,
            lpips_resolution=64,
            grid_path=tmp_path / "nn.png",
            sample_files=["a.png", "b.png"],
        )
    assert {(c.sample, c.real, c.flagged) for c in drawn} == {("a.png", "work0.png", True), ("b.png", "work1.png", True)}
    assert all("copy <" in c.closeness for c in drawn)
