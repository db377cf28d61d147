"""The data sets: seeded toys, the bundled digits, user files, fixed splits, dequantization."""

import re

import numpy as np
import pytest
import torch

from nf_kernels.data import TOYS, DataError, dequantize, load_dataset, make_toy, split_indices


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toys_are_seeded_two_dimensional_and_inside_the_plot_box(name):
    points = make_toy(name, 500, seed=3)
    assert points.shape == (500, 2) and points.dtype == torch.float32
    assert torch.equal(points, make_toy(name, 500, seed=3))
    assert not torch.equal(points, make_toy(name, 500, seed=4))
    assert points.abs().max() < 4.5 and points.std(0).min() > 0.5  # spread over the box, not collapsed


def test_split_is_a_fixed_partition():
    train, test = split_indices(100, 0.2, seed=0)
    assert len(test) == 20 and sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert torch.equal(test, split_indices(100, 0.2, seed=0)[1])
    with pytest.raises(DataError, match="test fraction"):
        split_indices(10, 1.5)


def test_toy_dataset_splits_do_not_depend_on_anything_but_the_data_seed():
    first, again = load_dataset("circles"), load_dataset("circles")
    assert torch.equal(first.train, again.train) and torch.equal(first.test, again.test)
    assert len(first.train) + len(first.test) == 12_000 and not first.discrete
    assert not torch.equal(first.test, load_dataset("circles", data_seed=1).test)


def test_digits_are_17_level_images_with_labels():
    digits = load_dataset("digits")
    assert digits.sample_shape == (1, 8, 8) and digits.levels == 17 and digits.num_dims == 64
    assert len(digits.train) + len(digits.test) == 1797
    assert digits.train.min() == 0 and digits.train.max() == 16 and not digits.train.dtype.is_floating_point
    assert digits.train_labels.shape == (len(digits.train),) and set(digits.test_labels.tolist()) == set(range(10))
    assert "levels=17" in repr(digits)


def test_dequantize_stays_in_its_bin_and_in_the_unit_interval():
    levels = torch.arange(17).repeat(50)
    noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(0))
    noise[-1] = 1 - 2**-24  # the largest float32 below 1: (16 + u) / 17 must not round up to 1
    x = dequantize(levels, 17, noise)
    assert (x >= 0).all() and (x < 1).all()
    assert torch.equal((x * 17).floor().long(), levels)


def test_user_float_npy_is_continuous_vector_data(tmp_path):
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64))
    data = load_dataset(str(path))
    assert data.sample_shape == (3,) and not data.discrete and data.train.dtype == torch.float32
    assert len(data.train) == 40 and len(data.test) == 10


def test_user_integer_tensor_is_8_bit_images_unless_told(tmp_path):
    path = tmp_path / "images.pt"
    torch.save(torch.randint(0, 256, (20, 6, 6), dtype=torch.uint8), path)
    data = load_dataset(str(path))
    assert data.sample_shape == (1, 6, 6) and data.levels == 256
    with pytest.raises(DataError, match=r"must lie in \[0, 4\)"):
        load_dataset(str(path), levels=4)


def test_folder_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (4, 6), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    grey = load_dataset(str(tmp_path))
    assert grey.sample_shape == (1, 4, 6) and grey.levels == 256
    Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    assert load_dataset(str(tmp_path)).sample_shape == (3, 4, 6)
    Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match="differ in size"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: "mooons", "unknown data set 'mooons'"),
        (lambda d: str(d / "missing.npy"), "no such data file"),
        (lambda d: (d / "notes.txt").write_text("hi") and str(d / "notes.txt"), "unknown data format"),
        (lambda d: torch.save({"x": torch.zeros(3)}, d / "dict.pt") or str(d / "dict.pt"), "single tensor"),
        (lambda d: np.save(d / "one.npy", np.zeros((1, 2), np.float32)) or str(d / "one.npy"), "at least 2"),
        (lambda d: np.save(d / "flat.npy", np.zeros(5, np.float32)) or str(d / "flat.npy"), r"expected \[N, D\]"),
        (lambda d: (d / "empty").mkdir() or str(d / "empty"), "has no images"),
    ],
)
def test_bad_data_gives_a_clear_error(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_dataset(make(tmp_path))


@pytest.mark.parametrize("bad, shown", [(np.nan, "holds nan"), (-np.inf, "holds -inf"),
                                        (1e300, "holds 1e+300, too large for float32")])  # fmt: skip
def test_non_finite_float_data_names_the_file_and_the_first_bad_row(tmp_path, bad, shown):
    points = np.zeros((50, 3))
    points[17, 1] = points[30, 0] = bad
    np.save(tmp_path / "points.npy", points)
    with pytest.raises(DataError, match=rf"points.npy: row 17 \(counting from 0\) {re.escape(shown)}; 2 of 50 rows"):
        load_dataset(str(tmp_path / "points.npy"))


@pytest.mark.parametrize("name", ["moons", "digits"])
def test_levels_is_refused_for_built_in_data(name):
    with pytest.raises(DataError, match=f"--levels applies to integer data files; the built-in '{name}'"):
        load_dataset(name, levels=4)
