"""Training losses: the sentence-transformers class each entry of `loss_registry.LOSSES` names, built with the
knobs it reads, and the dataset rows each one trains on.

Pair losses (cosine, cosent, angle, contrastive, online_contrastive) read (text1, text2, label).
Group losses (batch_*_triplet, group_mnrl, group_gist) read tickets and their groups (groups.py).
mnrl and triplet read (anchor, positive[, negative]) built only from similar pairs (label >= 0.5):
a dissimilar pair is never a positive. hybrid reads (text1, text2, label) and routes the similar
rows of each batch to MNRL, every row to its pair loss.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from tickettune.core.errors import UserError
from tickettune.core.similarity import SIMILAR
from tickettune.training.config import TrainConfig
from tickettune.training.loss_registry import LossSpec, loss_spec

# Group triplet losses measure cosine distance: embeddings of these models are unit length, so the library's
# Euclidean default (margin 5) could never be met and every triplet would pull at full strength forever.
GROUP_TRIPLET_MARGIN = 0.2


def library_loss(spec: LossSpec, model, margin: float | None = None, guide=None) -> nn.Module:
    """The sentence-transformers loss `spec` names, on `model`; `margin` (None: the library's default, or for group
    triplets GROUP_TRIPLET_MARGIN) goes to the class's own margin keyword."""
    from sentence_transformers.sentence_transformer import losses

    kwargs: dict[str, Any] = {}
    if spec.kind == "group_triplet":
        from sentence_transformers.sentence_transformer.losses.batch_hard_triplet import (
            BatchHardTripletLossDistanceFunction as Distance,
        )

        kwargs["distance_metric"] = Distance.cosine_distance
        margin = GROUP_TRIPLET_MARGIN if margin is None else margin
    if spec.margin_keyword and margin is not None:
        kwargs[spec.margin_keyword] = margin
    models = (model, guide) if spec.needs_guide else (model,)
    return getattr(losses, spec.library_class)(*models, **kwargs)


class HybridLoss(nn.Module):
    """A weighted sum of MNRL and a pair loss on one (text1, text2, label) batch.

    Each text is embedded once. The pair loss sees every row; MNRL sees only the rows with
    label >= 0.5 as (anchor, positive), the other similar rows of the batch being its negatives.
    Returns both terms so the trainer logs them separately.
    """

    # sentence-transformers losses: their compute_loss_from_embeddings is what this loss calls (nn.Module's
    # attribute typing would call it a Tensor).
    pair: Any
    mnrl: Any

    def __init__(self, model, pair: nn.Module, mnrl: nn.Module, mnrl_weight: float, binary_labels: bool) -> None:
        super().__init__()
        self.model = model
        self.pair = pair
        self.mnrl = mnrl
        self.mnrl_weight = mnrl_weight
        self.binary_labels = binary_labels

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = labels.view(-1).float()
        similar = labels >= SIMILAR
        pair_labels = similar.float() if self.binary_labels else labels
        pair = self.pair.compute_loss_from_embeddings(embeddings, pair_labels)
        if int(similar.sum()) >= 2:
            mnrl = self.mnrl.compute_loss_from_embeddings([e[similar] for e in embeddings[:2]], None)
        else:  # one similar row has no in-batch negative; keep the graph so DDP sees every parameter
            mnrl = embeddings[0].sum() * 0.0
        return {"pair": (1 - self.mnrl_weight) * pair, "mnrl": self.mnrl_weight * mnrl}

    def get_config_dict(self) -> dict[str, Any]:
        return {"mnrl_weight": self.mnrl_weight, "pair_loss": type(self.pair).__name__}


def build_loss(config: TrainConfig, model, guide=None) -> nn.Module:
    """The loss module named by config.loss (`guide`: the untuned model, for group_gist).

    Group losses train on group batches (groups.py): (text, label) rows for the batch_*_triplet losses,
    (anchor, positive) rows, one per group, for group_mnrl and group_gist. Under several processes MNRL takes
    its in-batch negatives from its own process's batch (batch_size per process), as sentence-transformers does
    by default.

        >>> from tickettune.training.config import make_config
        >>> loss = build_loss(make_config({"loss": "batch_all_triplet"}), model)   # doctest: +SKIP
        >>> loss([model.tokenize(texts)], torch.tensor(group_codes))              # doctest: +SKIP
    """
    from sentence_transformers.sentence_transformer import losses

    spec = loss_spec(config.loss)
    if spec.kind == "hybrid":
        pair = loss_spec(config.hybrid_pair_loss)
        return HybridLoss(model, library_loss(pair, model, config.margin), losses.MultipleNegativesRankingLoss(model),
                          config.hybrid_mnrl_weight, pair.binary_labels)
    return library_loss(spec, model, config.margin, guide)


def _dissimilar_partners(pairs: pd.DataFrame) -> dict[str, list[str]]:
    """For each text, the texts it forms a dissimilar pair with (either side), minus any it is also similar to."""
    partners: dict[str, set[str]] = {}
    similar: dict[str, set[str]] = {}
    for a, b, label in pairs[["text1", "text2", "label"]].itertuples(index=False):
        target = similar if label >= SIMILAR else partners
        target.setdefault(a, set()).add(b)
        target.setdefault(b, set()).add(a)
    return {t: sorted(p - similar.get(t, set())) for t, p in partners.items() if p - similar.get(t, set())}


def triplet_rows(pairs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """(anchor, positive, negative, phase) from the similar pairs only.

    The negative is the pair's own `negative` column when set, else a dissimilar partner of the
    anchor in `pairs` (chosen with `seed`), else missing (NaN).
    """
    rng = np.random.default_rng(seed)
    partners = _dissimilar_partners(pairs)
    positives = pairs[pairs["label"] >= SIMILAR]
    given = positives["negative"] if "negative" in positives else pd.Series(np.nan, index=positives.index)
    negatives: list[object] = []
    for anchor, positive, own in zip(positives["text1"], positives["text2"], given):
        if isinstance(own, str) and own:
            negatives.append(own)
            continue
        candidates = [t for t in partners.get(anchor, []) if t != positive]
        negatives.append(candidates[rng.integers(len(candidates))] if candidates else np.nan)
    return pd.DataFrame({"anchor": positives["text1"].to_numpy(), "positive": positives["text2"].to_numpy(),
                         "negative": negatives, "phase": positives["phase"].to_numpy()})


def loss_columns(pairs: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, list[str]]:
    """The rows and columns `config.loss` trains on, built from pairs with a `phase` column.

    Returns the frame (with `phase` kept for planning) and the column names the loss reads, in order.
    """
    spec = loss_spec(config.loss)
    if spec.trains_on == "tickets":
        raise UserError(f"loss '{config.loss}' trains on tickets and their groups, not pairs; see groups.py")
    if spec.kind in ("pair", "hybrid"):
        frame = pairs[["text1", "text2", "label", "phase"]].copy()
        if spec.binary_labels:
            frame["label"] = (frame["label"] >= SIMILAR).astype(float)
        return frame.reset_index(drop=True), ["text1", "text2", "label"]
    rows = triplet_rows(pairs, config.seed)
    if rows.empty:
        raise UserError(f"loss '{config.loss}' trains on similar pairs (label >= 0.5) but the train set has none; "
                        "add similar pairs or choose a pair loss such as cosent")
    has_negative = rows["negative"].notna()
    if config.loss == "triplet":
        if not has_negative.any():
            raise UserError("loss 'triplet' needs a dissimilar partner for each anchor (a `negative` column or a "
                            "dissimilar pair sharing the anchor) and the train set has none; use mnrl or a pair loss")
        return rows[has_negative].reset_index(drop=True), ["anchor", "positive", "negative"]
    # MNRL takes a negative column only when every row has one: a dataset column cannot be half empty.
    if has_negative.all():
        return rows.reset_index(drop=True), ["anchor", "positive", "negative"]
    return rows.drop(columns="negative").reset_index(drop=True), ["anchor", "positive"]
