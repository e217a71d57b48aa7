"""How many runs each published mean is over (experiments/published.py, derive_n): recomputed
for every row of paper_results.json from its mean, std and test set, and the reconstruction of
runs checked on runs made up here, whose n is known."""

import random

import pytest

from experiments import published
from experiments.published import TEST_IMAGES, derive_n, logged, runs_of, whole_total

RESULTS = published.load()
# the rows the authors' "averaged over 3 runs" does not fit: (model, criterion, noise, sparsity)
NOT_THREE = {
    ("densenet121", "flipout", True, 93.75): 4,
    ("densenet121", "global_magnitude", True, 75.0): 4,
    ("densenet121", "global_magnitude", True, 93.75): 6,
    ("densenet121", "global_magnitude", True, 98.4375): 5,
    ("densenet121", "global_magnitude", True, 99.609375): 5,
    ("densenet121", "global_magnitude", True, 99.90234375): 5,
}


def test_every_rows_n_is_derived_from_its_numbers():
    for row in RESULTS.rows:
        decimals = RESULTS.sources[row.source].decimals
        assert derive_n(row.mean, row.std, TEST_IMAGES[row.dataset], decimals) == (
            row.n,
            row.n_how,
        ), row
    derived = {
        (row.model, row.criterion, row.noise, row.sparsity): row.n
        for row in RESULTS.rows
        if row.n_how.startswith("derived")
    }
    assert derived == NOT_THREE
    for row in RESULTS.rows:
        assert (row.n_note is not None) == row.n_how.startswith("derived")
        if row.std is None:  # Hoyer-Square: one run each, the seed README says
            assert (row.n, row.n_how) == (1, "stated: 1 run, no spread published")
        elif not row.n_how.startswith("derived"):
            assert row.n == 3 and row.n_how.startswith("stated: 3 fits mean and std")


def test_densenet_flipout_at_93_75_is_four_runs():
    """0.900191 ± 0.004375 of 3,925 images: 3 runs would total 0.900191 · 3 · 3925 = 10599.75
    correct images, no whole number; 4 runs total 14133.0, and four counts give both numbers as
    the authors' file prints them."""
    assert whole_total(90.0191, 3, 3925, 4) is None
    assert whole_total(90.0191, 4, 3925, 4) == 14133
    assert runs_of(90.0191, 0.4375, 3, 3925, 4) is None
    counts = runs_of(90.0191, 0.4375, 4, 3925, 4)
    assert sum(counts) == 14133
    accuracies = [logged(count, 3925) / 100 for count in counts]
    mean = sum(accuracies) / 4
    std = (sum((a - mean) ** 2 for a in accuracies) / 3) ** 0.5
    assert (f"{mean:.6f}", f"{std:.6f}") == ("0.900191", "0.004375")
    n, how = derive_n(90.0191, 0.4375, 3925, 4)
    assert (n, how) == (4, "derived: 4 runs reproduce mean and std; 3 fits neither")


def test_a_mean_that_three_runs_fit_but_not_with_that_std_is_not_three():
    """DenseNet-121 GlobalMagnitude with noise at 93.75%: 0.902590 fits 3 runs (10628 images),
    but no three counts of that total have a sample std that prints 0.004953 (the nearest,
    3526, 3538 and 3564, print 0.004949); six do."""
    assert runs_of(90.259, 0.4953, 3, 3925, 4) is None
    assert derive_n(90.259, 0.4953, 3925, 4) == (
        6,
        "derived: 6 runs reproduce mean and std; 3 fits the mean but not the std",
    )


@pytest.mark.parametrize("images", sorted(TEST_IMAGES.values()))
def test_runs_made_up_here_are_found_again_from_their_printed_mean_and_std(images):
    generator = random.Random(31)
    for _ in range(40):
        n = generator.randint(2, 6)
        center, spread = generator.randint(images // 10, images - 20), generator.randint(0, 60)
        counts = [min(images, max(0, round(generator.gauss(center, spread)))) for _ in range(n)]
        accuracies = [logged(count, images) for count in counts]
        mean = sum(accuracies) / n
        std = (sum((a - mean) ** 2 for a in accuracies) / (n - 1)) ** 0.5
        printed_mean, printed_std = round(mean, 4), round(std, 4)
        found = runs_of(printed_mean, printed_std, n, images, 4)
        assert found is not None and sum(found) == sum(counts), (counts, found)
        # the authors' 3 where it fits, else the fewest runs that print alike: never more
        derived, _ = derive_n(printed_mean, printed_std, images, 4)
        assert derived == 3 or derived <= n


def test_four_decimals_of_a_percent_or_a_spread_of_0_fit_any_n():
    # the unpruned networks' file prints fractions to four decimals: 93.58 ± 0.15
    assert derive_n(93.58, 0.15, 10_000, 2) == (
        3,
        "stated: 3 fits mean and std; every n from 2 to 10 fits the mean",
    )
    # a network collapsed to chance: every run 1,000 of 10,000
    assert derive_n(10.0, 0.0, 10_000, 4)[0] == 3
