from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fairsynth.data.records import Record
from fairsynth.data.sampling import FAIRSKIN_BATCH_MIX, BalanceConfig, sampling_weights

# Fitzpatrick17k-like skew: I 18 %, II 29 %, III 20 %, IV 17 %, V 9 %, VI 4 %, unknown 3 %.
SKEW = {1: 180, 2: 290, 3: 200, 4: 170, 5: 90, 6: 40, None: 30}


def skewed_records() -> list[Record]:
    records = []
    for fst, n in SKEW.items():
        for i in range(n):
            records.append(Record(f"{fst}-{i}", "x.png", label=["a", "b", "c"][i % 3], attributes={"fst": fst}))
    return records


def drawn_shares(records, weights, key, draws=200_000):
    rng = np.random.default_rng(0)
    picks = rng.choice(len(records), size=draws, p=weights)
    counts = Counter(key(records[i]) for i in picks)
    return {k: v / draws for k, v in counts.items()}


def test_fairskin_batch_mix_is_met():
    records = skewed_records()
    weights = sampling_weights(records, BalanceConfig(strategy="mix", by="fst", mix=FAIRSKIN_BATCH_MIX))
    bucket = lambda r: "I-III" if r.fst in (1, 2, 3) else "IV" if r.fst == 4 else "V-VI" if r.fst in (5, 6) else None
    shares = drawn_shares(records, weights, bucket)
    assert shares["I-III"] == pytest.approx(0.4, abs=0.01)
    assert shares["IV"] == pytest.approx(0.2, abs=0.01)
    assert shares["V-VI"] == pytest.approx(0.4, abs=0.01)
    assert None not in shares  # unknown skin type is not drawn by a skin-type mix
    # Inside a bucket, rows are equally likely: V and VI in proportion to their counts.
    assert weights[[r.fst == 5 for r in records]][0] == pytest.approx(weights[[r.fst == 6 for r in records]][0])


def test_inverse_frequency_equalises_values():
    records = skewed_records()
    weights = sampling_weights(records, BalanceConfig(strategy="inverse_frequency", by="fst"))
    shares = drawn_shares(records, weights, lambda r: r.fst)
    for value in SKEW:
        assert shares[value] == pytest.approx(1 / 7, abs=0.01)


def test_none_is_uniform():
    weights = sampling_weights(skewed_records(), BalanceConfig())
    assert np.allclose(weights, weights[0]) and weights.sum() == pytest.approx(1.0)


def test_mix_asking_for_an_absent_group_is_an_error():
    records = [r for r in skewed_records() if r.fst not in (5, 6)]
    with pytest.raises(ValueError, match="V-VI"):
        sampling_weights(records, BalanceConfig(strategy="mix", by="fst", mix=FAIRSKIN_BATCH_MIX))


def test_mix_by_class_label():
    records = skewed_records()
    weights = sampling_weights(records, BalanceConfig(strategy="mix", by="label", mix={"a": 0.5, "b": 0.5}))
    shares = drawn_shares(records, weights, lambda r: r.label)
    assert shares["a"] == pytest.approx(0.5, abs=0.01) and "c" not in shares


def test_empty_mix_is_a_config_error():
    with pytest.raises(ValueError, match="mix is empty"):
        BalanceConfig(strategy="mix")


def test_inverse_frequency_over_class_and_skin_type_equalises_every_cell():
    # classes skewed inside each skin type: a, b, c in 6 : 3 : 1
    records = [
        Record(f"{fst}-{i}", "x.png", label="a" if i % 10 < 6 else "b" if i % 10 < 9 else "c", attributes={"fst": fst})
        for fst, n in SKEW.items() if fst is not None for i in range(n)
    ]
    weights = sampling_weights(records, BalanceConfig(strategy="inverse_frequency", by=["label", "fst"]))
    shares = drawn_shares(records, weights, lambda r: (r.label, r.fst))
    assert len(shares) == 18 and all(share == pytest.approx(1 / 18, abs=0.005) for share in shares.values())
    by_fst_only = sampling_weights(records, BalanceConfig(strategy="inverse_frequency", by="fst"))
    assert drawn_shares(records, by_fst_only, lambda r: r.label)["c"] == pytest.approx(0.1, abs=0.01)


def test_balance_by_a_list_is_checked():
    from fairsynth.config import ConfigError

    assert BalanceConfig(strategy="mix", by=["fst"], mix=FAIRSKIN_BATCH_MIX).by == "fst"
    with pytest.raises(ConfigError, match="takes one"):
        BalanceConfig(strategy="mix", by=["label", "fst"], mix={"a": 1.0})
    with pytest.raises(ConfigError, match="non-empty list"):
        BalanceConfig(strategy="inverse_frequency", by=[])
