"""`review import`: statistics against hand-computed values, sheet validation, the verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from fairsynth.config import ConfigError
from fairsynth.review import ImportConfig, ReviewError, import_ratings
from fairsynth.review.stats import cluster_mean, guess_accuracy, krippendorff_alpha_ordinal, rating_auroc

from .conftest import write_key, write_sheet

#: ids 01-04 synthetic (01 and 03 on type I, 02 and 04 on type VI), 05 and 06 real.
SOURCES = {"01": "synthetic", "02": "synthetic", "03": "synthetic", "04": "synthetic", "05": "real", "06": "real"}
FST = {"01": 1, "02": 6, "03": 1, "04": 6, "05": 1, "06": 6}
ALICE = [("01", "6", "real"), ("02", "2", "synthetic"), ("03", "7", "real"), ("04", "5", ""), ("05", "7", "real"), ("06", "6", "synthetic")]
BOB = [("01", "5", "synthetic"), ("02", "1", "synthetic"), ("03", "", ""), ("04", "6", "real"), ("05", "6", "real"), ("06", "7", "real")]


@pytest.fixture
def two_raters(tmp_path):
    key = write_key(tmp_path / "review.key.json", SOURCES, FST)
    alice = write_sheet(tmp_path / "alice" / "ratings.csv", ALICE)
    bob = write_sheet(tmp_path / "ratings-bob.csv", BOB)
    return key, alice, bob


def test_statistics_match_hand_computed_values(two_raters, tmp_path):
    key, alice, bob = two_raters
    report = import_ratings([alice, bob], key)
    assert report["raters"]["alice"]["rated"] == 6 and report["raters"]["bob"]["rated"] == 5
    # synthetic ratings: alice 6 2 7 5, bob 5 1 6 (03 unrated) -> 32 / 7; below 3: the 2 and the 1
    synthetic = report["synthetic"]
    assert synthetic["n"] == 7 and synthetic["images"] == 4
    assert synthetic["mean"] == pytest.approx(32 / 7)
    assert synthetic["share_below"] == pytest.approx(2 / 7)
    # interval over images as clusters: sums 11, 3, 7, 11 of 2, 2, 1, 2 ratings; residuals S_i - mean * n_i
    # = 13/7, -43/7, 17/7, 13/7; SE^2 = 4/3 * (169 + 1849 + 289 + 169) / 49 / 7^2
    half = stats.t.ppf(0.975, 3) * math.sqrt(4 / 3 * 2476 / 49 / 49)
    assert synthetic["low"] == pytest.approx(32 / 7 - half) and synthetic["high"] == pytest.approx(32 / 7 + half)
    assert report["real"]["mean"] == pytest.approx(26 / 4) and report["real"]["share_below"] == 0
    # per skin type: type I is 01 and 03 (6, 7 and 5), type VI is 02 and 04 (2, 5, 1, 6)
    assert report["synthetic_by_fst"]["1"]["mean"] == pytest.approx(6.0) and report["synthetic_by_fst"]["1"]["n"] == 3
    assert report["synthetic_by_fst"]["6"]["mean"] == pytest.approx(3.5)
    assert report["synthetic_by_fst"]["6"]["share_below"] == pytest.approx(0.5)
    assert report["synthetic_by_stratum"]["label=melanoma, fst=6"]["n"] == 4
    # guesses: real images called real 3 times, synthetic once; synthetic ones called real 3, synthetic 3
    told = report["discrimination"]
    assert told["guesses"] == 10 and told["accuracy"] == pytest.approx(0.6)
    assert told["balanced_accuracy"] == pytest.approx((3 / 4 + 3 / 6) / 2)
    assert told["always_synthetic_accuracy"] == pytest.approx(0.6)
    assert told["fisher_p_value"] == pytest.approx(stats.fisher_exact([[3, 1], [3, 3]]).pvalue)
    # AUROC by counting: real 7, 6, 6, 7 against synthetic 6 2 7 5 5 1 6 -> (6.5 + 5 + 5 + 6.5) / 28
    assert told["rating_auroc_real_vs_synthetic"] == pytest.approx(23 / 28)
    # agreement: two raters, five images rated by both
    assert report["agreement"]["images_rated_by_two_or_more"] == 5
    assert report["agreement"]["alpha"] == pytest.approx(krippendorff_alpha_ordinal([[6, 2, 7, 5, 7, 6], [5, 1, None, 6, 6, 7]]))
    assert report["acceptance"] == {
        "mean_ok": False, "low_share_ok": False, "accepted": False,
        "rule": "synthetic mean rating > 5 and share of ratings below 3 < 10%", "by_fst": {"1": True, "6": False},
    }
    saved = json.loads((tmp_path / "review.json").read_text())
    assert saved["synthetic"]["mean"] == pytest.approx(32 / 7) and "output" not in saved


def test_references_agree_with_sklearn_and_scipy():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    truth = ["real" if x else "synthetic" for x in rng.random(60) < 0.3]
    scores = [int(s) for s in rng.integers(1, 8, 60)]
    guesses = ["real" if x else "synthetic" for x in rng.random(60) < 0.5]
    assert rating_auroc(truth, scores) == pytest.approx(roc_auc_score([t == "real" for t in truth], scores))
    assert guess_accuracy(truth, guesses)["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, guesses))
    # one rating per image: the ordinary t-interval
    values = [float(s) for s in scores]
    one = cluster_mean([(str(i), v) for i, v in enumerate(values)])
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (one["low"], one["high"]) == (pytest.approx(low), pytest.approx(high))
    # every image rated by both raters: the t-interval of the per-image means
    second = [float(s) for s in rng.integers(1, 8, 60)]
    both = cluster_mean([(str(i), v) for i, v in enumerate(values)] + [(str(i), v) for i, v in enumerate(second)])
    means = (np.array(values) + np.array(second)) / 2
    low, high = stats.t.interval(0.95, 59, loc=means.mean(), scale=stats.sem(means))
    assert (both["low"], both["high"]) == (pytest.approx(low), pytest.approx(high))


def test_krippendorffs_ordinal_alpha_by_hand():
    """Two raters, four images: (1, 1), (2, 3), (3, 3), (1, 3).

    Coincidences: o11 = 2, o23 = o32 = 1, o33 = 2, o13 = o31 = 1; n1 = 3, n2 = 1, n3 = 4, n = 8.
    Ordinal distances: d12 = ((3 + 1) / 2)^2 = 4, d23 = ((1 + 4) / 2)^2 = 6.25, d13 = (8 - 7 / 2)^2 = 20.25.
    Observed D_o = (2 * 6.25 + 2 * 20.25) / 8 = 6.625; expected D_e = 2 * (3 * 1 * 4 + 1 * 4 * 6.25 + 3 * 4 * 20.25)
    / (8 * 7) = 10; alpha = 1 - 6.625 / 10 = 0.3375.
    """
    assert krippendorff_alpha_ordinal([[1, 2, 3, 1], [1, 3, 3, 3]]) == pytest.approx(0.3375)
    # an image only one rater rated does not count
    assert krippendorff_alpha_ordinal([[1, 2, 3, 1, 7], [1, 3, 3, 3, None]]) == pytest.approx(0.3375)
    # Krippendorff (2011), the published example with missing values: 4 coders, 12 units, ordinal alpha 0.815
    nan = None
    published = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    assert krippendorff_alpha_ordinal(published) == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha_ordinal([[1, 2, 3]]) is None  # one rater
    assert krippendorff_alpha_ordinal([[5, 5], [5, 5]]) is None  # one value: no expected disagreement


def test_the_acceptance_verdict_both_ways(tmp_path):
    key = write_key(tmp_path / "key.json", {f"{i:02d}": "synthetic" for i in range(1, 11)})

    def verdict(scores: list[int], **options) -> dict:
        sheet = write_sheet(tmp_path / "ratings-x.csv", [(f"{i:02d}", str(s)) for i, s in enumerate(scores, 1)])
        return import_ratings([sheet], key, ImportConfig(**options))["acceptance"]

    assert verdict([6] * 10)["accepted"] is True
    one_low = verdict([7] * 9 + [2])  # mean 6.5, but 10 % below 3 is not under 10 %
    assert one_low["mean_ok"] is True and one_low["low_share_ok"] is False and one_low["accepted"] is False
    assert verdict([7] * 9 + [2], acceptance_low_share=0.15)["accepted"] is True
    assert verdict([5] * 10)["mean_ok"] is False  # 5.0 is not above 5.0
    assert verdict([5] * 10, acceptance_mean=4.5)["accepted"] is True
    assert verdict([4] * 10, low_below=5)["low_share_ok"] is False
    with pytest.raises(ConfigError, match="acceptance_mean"):
        ImportConfig(acceptance_mean=9)


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (None, [("01", "8")], r"ratings-bad\.csv, line 2: rating '8' of id 01 is not a whole number 1-7"),
        (None, [("01", "5"), ("02", "4.5")], r"ratings-bad\.csv, line 3: rating '4\.5' of id 02"),
        (None, [("01", "5"), ("99", "5")], r"ratings-bad\.csv, line 3: id '99' is not in the key"),
        (None, [("01", "5"), ("02", "5"), ("01", "4")], r"ratings-bad\.csv, line 4: id 01 appears twice \(first on line 2\)"),
        (None, [("01", "5", "maybe")], r"ratings-bad\.csv, line 2: real_or_synthetic 'maybe' of id 01 must be real, synthetic or blank"),
        (("id", "score", "real_or_synthetic"), [("01", "5")], r"ratings-bad\.csv, line 1: missing column\(s\) rating; unexpected column\(s\) score"),
        (("id", "rating"), [("01", "5")], r"ratings-bad\.csv, line 1: missing column\(s\) real_or_synthetic"),
    ],
)
def test_bad_sheets_name_the_file_and_the_line(tmp_path, header, rows, message):
    key = write_key(tmp_path / "key.json", {"01": "synthetic", "02": "real"})
    sheet = write_sheet(tmp_path / "ratings-bad.csv", rows, *([header] if header else []))
    with pytest.raises(ReviewError, match=message):
        import_ratings([sheet], key)


def test_bad_keys_and_sheet_lists(tmp_path, two_raters):
    key, alice, bob = two_raters
    with pytest.raises(ReviewError, match="does not exist"):
        import_ratings([alice], tmp_path / "nokey.json")
    (tmp_path / "notakey.json").write_text("[1, 2]")
    with pytest.raises(ReviewError, match="is not a review key"):
        import_ratings([alice], tmp_path / "notakey.json")
    with pytest.raises(ReviewError, match="given twice"):
        import_ratings([alice, alice], key)
    with pytest.raises(ReviewError, match="no rating sheet"):
        import_ratings([], key)
    empty = write_sheet(tmp_path / "empty.csv", [("01", ""), ("02", "")])
    with pytest.raises(ReviewError, match="no image has a rating"):
        import_ratings([empty], key)


def test_a_sheet_saved_by_a_spreadsheet_program_is_read(tmp_path):
    """UTF-8 byte-order mark, ';' separators, ids whose leading zeros were dropped, a quoted multi-line comment."""
    key = write_key(tmp_path / "key.json", {"0007": "synthetic", "0010": "real"})
    sheet = tmp_path / "carol.csv"
    sheet.write_bytes("\ufeffid;rating;real_or_synthetic;comment\r\n7;6;Synthetic;\"odd\r\nborder; blurry\"\r\n10;7;real;\r\n".encode())
    report = import_ratings([sheet], key)
    assert report["raters"] == {"carol": {
        "rated": 2, "rated_synthetic": 1, "rated_real": 1, "synthetic_mean": 6.0, "real_mean": 7.0, "guesses": 2,
        "guess_accuracy": 1.0, "rating_auroc": 1.0,
    }}
    bad = tmp_path / "dave.csv"
    bad.write_text("id,rating,real_or_synthetic,comment\n0007,6,real,\n0010,9,real,\n")
    with pytest.raises(ReviewError, match=r"dave\.csv, line 3: rating '9'"):
        import_ratings([bad], key)
