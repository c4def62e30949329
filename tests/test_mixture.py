"""Mixing: realized shares on 1,000+ records, reshuffled passes, a stable validation split."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medsft.data.mixture import _Stream, in_validation, plan_stage


def _pools(n_domain=1500, n_general=600, seed=0):
    rng = random.Random(seed)
    pools = {"medical": list(range(n_domain)), "general": list(range(n_domain, n_domain + n_general))}
    # Medical answers are short and general ones long, as in real data: the two ratios then differ.
    lengths = [rng.randint(20, 90) for _ in range(n_domain)] + [rng.randint(120, 500) for _ in range(n_general)]
    return pools, lengths


@pytest.mark.parametrize("weights", [{"medical": 0.7, "general": 0.3}, {"medical": 0.8, "general": 0.2},
                                     {"medical": 0.5, "general": 0.5}, {"medical": 0.3, "general": 0.7}])
@pytest.mark.parametrize("epochs", [1, 2.5])
def test_shares_by_samples_within_one_point(weights, epochs):
    pools, lengths = _pools()
    plan = plan_stage("mixed", pools, lengths, weights, epochs, "samples", seed=3)
    for source, asked in weights.items():
        assert abs(plan.realized_share_samples[source] - asked) <= 0.01
    anchor = max(weights, key=weights.get)
    assert plan.samples[anchor] == round(len(pools[anchor]) * epochs)


@pytest.mark.parametrize("weights", [{"medical": 0.7, "general": 0.3}, {"medical": 0.9, "general": 0.1}])
def test_shares_by_tokens_within_two_points(weights):
    pools, lengths = _pools()
    plan = plan_stage("mixed", pools, lengths, weights, 2, "tokens", seed=3)
    for source, asked in weights.items():
        assert abs(plan.realized_share_tokens[source] - asked) <= 0.02
    # By tokens, long general answers mean far fewer general records than by samples.
    by_samples = plan_stage("mixed", pools, lengths, weights, 2, "samples", seed=3)
    assert plan.samples["general"] < by_samples.samples["general"]


def test_small_source_cycles_without_replacement_and_reshuffles():
    pools = {"medical": list(range(1000)), "general": list(range(1000, 1100))}
    lengths = [10] * 1100
    plan = plan_stage("mixed", pools, lengths, {"medical": 0.7, "general": 0.3}, 1, seed=1)
    general = [i for i in plan.order if i >= 1000]
    assert len(general) == round(1000 * 0.3 / 0.7)  # 429: more than 4 passes over 100 records
    counts = Counter(general)
    # Without replacement: every record is used 4 times before any is used a 5th time.
    assert set(counts.values()) == {4, 5} and sum(1 for c in counts.values() if c == 5) == 29


def test_each_pass_over_a_source_is_a_new_shuffle():
    stream = _Stream(range(100), random.Random(0))
    passes = [[stream.next() for _ in range(100)] for _ in range(4)]
    for chunk in passes:
        assert sorted(chunk) == list(range(100))
    assert len({tuple(c) for c in passes}) == 4


def test_epochs_are_reshuffled_and_deterministic():
    pools, lengths = _pools(300, 100)
    plan = plan_stage("mixed", pools, lengths, {"medical": 0.7, "general": 0.3}, 2, seed=5)
    n = 300 + round(300 * 0.3 / 0.7)  # the first epoch: one pass over the anchor plus its share
    first, second = plan.order[:n], plan.order[n:]
    assert sorted(i for i in first if i < 300) == sorted(i for i in second if i < 300) == list(range(300))
    assert first != second
    again = plan_stage("mixed", pools, lengths, {"medical": 0.7, "general": 0.3}, 2, seed=5)
    assert again.order == plan.order
    other = plan_stage("mixed", pools, lengths, {"medical": 0.7, "general": 0.3}, 2, seed=6)
    assert other.order != plan.order


def test_unweighted_stage_uses_every_record_once_per_epoch():
    pools, lengths = _pools(50, 20)
    plan = plan_stage("sft", pools, lengths, None, 2, seed=0)
    assert sorted(plan.order) == sorted(list(range(70)) * 2)


def test_validation_split_is_stable_when_data_is_added():
    keys = [f"record-{i}" for i in range(5000)]
    before = {k for k in keys[:3000] if in_validation(k, 0.05)}
    after = {k for k in keys if in_validation(k, 0.05)}
    assert before == {k for k in after if k in set(keys[:3000])}
    assert 0.035 <= len(after) / len(keys) <= 0.065
    assert not any(in_validation(k, 0.0) for k in keys)


def test_adaptive_order_redraws_only_the_rest_with_the_new_weights():
    from medsft.data.mixture import AdaptiveOrder, plan_stage

    pools = {"medical": list(range(0, 300)), "general": list(range(300, 400))}
    lengths = [10] * 400
    plan = plan_stage("mixed", pools, lengths, {"medical": 0.7, "general": 0.3}, 2, seed=3)
    order = AdaptiveOrder(plan, pools, seed=3, lengths=lengths)
    before = list(order.order)
    order.reweight(200, {"medical": 0.4, "general": 0.6}, number=1)
    assert order.order[:200] == before[:200] and len(order) == len(before)
    assert abs(order.shares(0, 200)["general"] - 0.3) < 0.05
    assert abs(order.shares(200)["general"] - 0.6) < 0.01  # cumulative targets: exact to a record
    again = AdaptiveOrder(plan, pools, seed=3, lengths=lengths)
    again.reweight(200, {"medical": 0.4, "general": 0.6}, number=1)
    assert again.order == order.order  # the same change replays to the same order


def test_adaptive_order_of_a_stage_mixed_by_tokens_redraws_by_tokens():
    from medsft.data.mixture import AdaptiveOrder, plan_stage

    pools = {"medical": list(range(0, 300)), "general": list(range(300, 400))}
    lengths = [10 + i % 7 for i in range(300)] + [30 + i % 11 for i in range(100)]  # general answers ~3x longer
    plan = plan_stage("mixed", pools, lengths, {"medical": 0.5, "general": 0.5}, 2, seed=3, ratio_by="tokens")
    order = AdaptiveOrder(plan, pools, seed=3, lengths=lengths)
    assert abs(order.shares(0, 200, by="tokens")["general"] - 0.5) < 0.05
    order.reweight(200, {"medical": 0.4, "general": 0.6}, number=1)
    assert abs(order.shares(200, by="tokens")["general"] - 0.6) < 0.01  # tokens, as the stage asks
    assert order.shares(200)["general"] < 0.45  # far from 0.6 of the records: the longer source takes fewer
    by_samples = plan_stage("mixed", pools, lengths, {"medical": 0.5, "general": 0.5}, 2, seed=3)
    samples = AdaptiveOrder(by_samples, pools, seed=3, lengths=lengths)  # a stage mixed by records re-draws by records
    samples.reweight(200, {"medical": 0.4, "general": 0.6}, number=1)
    assert abs(samples.shares(200)["general"] - 0.6) < 0.01


def test_the_adaptive_policy_raises_general_when_it_slips_and_lowers_it_when_domain_stalls():
    from medsft.monitor.adaptive import decide, general_share
    from medsft.recipe import AdaptiveConfig

    config = AdaptiveConfig(general_share=[0.1, 0.5], step=0.1, min_general_retention=0.95, min_length_ratio=0.9)
    roles = {"medical": "domain", "general": "general"}
    weights = {"medical": 0.7, "general": 0.3}
    raised, why = decide(config, weights, roles, {"general/retention": 0.9, "general/length_ratio": 1.0}, None)
    assert general_share(raised, roles) == pytest.approx(0.4) and "retention 0.900 < 0.95" in why
    holding = {"general/retention": 1.0, "general/length_ratio": 1.0, "domain/medical/rouge_l": 0.41}
    lowered, why = decide(config, weights, roles, holding, previous_domain=0.409)
    assert general_share(lowered, roles) == pytest.approx(0.2) and "flat" in why
    assert decide(config, weights, roles, holding, previous_domain=0.3) is None  # domain still rising: keep
    top = {"medical": 0.5, "general": 0.5}
    assert decide(config, top, roles, {"general/retention": 0.5}, None) is None  # at the bound: nothing to do
