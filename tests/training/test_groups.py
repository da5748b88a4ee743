import numpy as np
import pandas as pd
import pytest

from tickettune.core.errors import UserError
from tickettune.training.groups import GroupPool, pair_batch, pk_batch, plan_group_batches


def pool(groups=6, per_group=10, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    code = np.repeat(np.arange(groups), per_group)
    vectors = rng.normal(size=(len(code), dim)) + np.eye(groups, dim)[code % dim] * 2
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return GroupPool(np.array([f"ticket {i} of group {g}" for i, g in enumerate(code)]), code, vectors)


@pytest.mark.parametrize("hard", [False, True])
def test_pk_batches_hold_p_groups_of_k_tickets(hard):
    data, rng = pool(), np.random.default_rng(1)
    for _ in range(20):
        rows = pk_batch(data, groups=3, size=12, rng=rng, hard=hard)
        counts = pd.Series(data.code[rows]).value_counts()
        assert len(rows) == 12 and len(counts) == 3 and set(counts) == {4}
        assert len(set(rows)) == 12  # groups of 10 give 4 distinct tickets each


@pytest.mark.parametrize("hard", [False, True])
def test_one_pair_per_group_never_puts_a_group_twice_in_a_batch(hard):
    data, rng = pool(), np.random.default_rng(2)
    for _ in range(20):
        pairs = pair_batch(data, size=5, rng=rng, hard=hard)
        anchors, positives = zip(*pairs)
        groups = data.code[list(anchors)]
        # Every other row's texts are this row's negatives: none may share its group.
        assert len(set(groups)) == len(pairs) == 5
        assert (data.code[list(positives)] == groups).all() and all(a != p for a, p in pairs)


def test_one_pair_per_group_caps_the_batch_at_the_number_of_groups():
    assert len(pair_batch(pool(groups=3), size=8, rng=np.random.default_rng(0), hard=False)) == 3


def test_hard_batches_come_from_one_neighbourhood():
    # Two tight clusters in the untuned model's space: a hard batch draws from the seed's cluster only.
    code = np.repeat(np.arange(4), 20)
    vectors = np.where((code < 2)[:, None], [1.0, 0.0], [0.0, 1.0]) + np.random.default_rng(0).normal(0, 0.01, (80, 2))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data, rng = GroupPool(np.array([str(i) for i in range(80)]), code, vectors), np.random.default_rng(3)
    for _ in range(10):
        groups = set(data.code[pk_batch(data, groups=2, size=8, rng=rng, hard=True)])
        assert groups in ({0, 1}, {2, 3})


def test_plan_has_phases_of_the_asked_epochs_and_rows_in_batch_order():
    data = pool()  # 60 tickets
    frame, plan = plan_group_batches(data, {"easy": 1, "medium": 0.5, "hard": 1}, batch_size=12, groups_per_batch=3,
                                     one_per_group=False, seed=0)
    assert [(p.name, p.steps) for p in plan.phases] == [("easy", 5), ("medium", 3), ("hard", 5)]
    assert plan.total_steps == 13 and len(plan.batches) == 13
    assert plan.batches[0] == list(range(12)) and plan.batches[-1][-1] == len(frame) - 1
    assert list(frame.columns) == ["text", "label", "phase"]
    assert frame["phase"].tolist()[:12] == ["easy"] * 12 and frame["phase"].iloc[-1] == "hard"
    for batch in plan.batches:
        assert pd.Series(frame["label"].to_numpy()[batch]).value_counts().tolist() == [4, 4, 4]


def test_plan_is_reproducible_and_mixes_phases_without_curriculum():
    args = {"batch_size": 6, "groups_per_batch": 3, "one_per_group": True, "seed": 4}
    first, _ = plan_group_batches(pool(), {"easy": 1, "hard": 1}, **args)
    again, _ = plan_group_batches(pool(), {"easy": 1, "hard": 1}, **args)
    assert first.equals(again) and list(first.columns) == ["anchor", "positive", "phase"]
    _, mixed = plan_group_batches(pool(), {"easy": 1, "hard": 1}, curriculum=False, **args)
    assert [p.name for p in mixed.phases] == ["mixed"]


def test_two_processes_get_whole_batches_each():
    _, plan = plan_group_batches(pool(), {"easy": 1}, batch_size=12, groups_per_batch=3, one_per_group=False,
                                 seed=0, world_size=2)
    assert len(plan.batches) == 2 * plan.total_steps and all(len(b) == 12 for b in plan.batches)


def test_groups_of_one_ticket_cannot_train():
    with pytest.raises(UserError, match="two or more groups with at least two tickets"):
        GroupPool(np.array(["a", "b", "c", "d"]), np.array([0, 1, 2, 2]))
