"""Every training loss tickettune knows, in one table: its name, what data it trains on, the sentence-transformers
class behind it, and the knobs it reads.

Config validation (`config.TrainConfig.loss`), the CLI (`tickettune presets` lists them, `train --help` names
them), the trainer (`losses.build_loss`, the batch planning in `run.py`) and `--feedback` all read this table, so
adding a loss is one entry here (plus, for a loss sentence-transformers lacks, its module in losses.py). It is a
leaf: plain data, no torch, so `tickettune --help` stays fast.

    >>> LOSSES["cosent"].trains_on, LOSSES["cosent"].columns
    ('pairs', ('text1', 'text2', 'label'))
    >>> names(kind="group")[:2]
    ('batch_all_triplet', 'batch_hard_triplet')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

LossKind = Literal["pair", "anchor", "hybrid", "group_triplet", "group_pairs"]


@dataclass(frozen=True)
class LossSpec:
    """One training loss.

    kind: what a batch holds.
      - pair: (text1, text2, label) rows, a score per pair;
      - anchor: (anchor, positive[, negative]) rows built from the similar pairs, other rows as negatives;
      - hybrid: (text1, text2, label) rows, similar ones also as MNRL (anchor, positive);
      - group_triplet: (text, label) rows, several tickets of each of a few groups (P x K batches);
      - group_pairs: (anchor, positive) rows, one per group, so no in-batch negative shares the anchor's group.
    library_class: the class in `sentence_transformers.sentence_transformer.losses`, or "" for tickettune's own.
    margin_keyword: the class's keyword that `config.margin` sets (None: the loss has no margin).
    binary_labels: labels are cut at 0.5 to 0/1 before the loss sees them.
    """

    name: str
    kind: LossKind
    library_class: str
    description: str
    margin_keyword: Optional[str] = None
    binary_labels: bool = False
    needs_guide: bool = False  # group_gist: the untuned model judges which in-batch negatives are too close

    @property
    def trains_on(self) -> Literal["pairs", "tickets"]:
        """`tickets` (labelled tickets and their groups) for the group losses, `pairs` for the rest."""
        return "tickets" if self.kind.startswith("group") else "pairs"

    @property
    def columns(self) -> tuple[str, ...]:
        """The dataset columns the loss reads, in order (anchor losses may add `negative`)."""
        return {"pair": ("text1", "text2", "label"), "hybrid": ("text1", "text2", "label"),
                "anchor": ("anchor", "positive"), "group_triplet": ("text", "label"),
                "group_pairs": ("anchor", "positive")}[self.kind]

    @property
    def in_batch_negatives(self) -> bool:
        """Whether the other rows of a batch serve as negatives: then a batch needs two rows or more. (triplet
        brings its own negative.)"""
        return self.name in ("mnrl", "hybrid") or self.trains_on == "tickets"

    @property
    def distinct_texts_per_batch(self) -> bool:
        """Pair-file losses whose batches are planned without a repeated text: under MNRL (and hybrid's MNRL term)
        a repeat would be its own negative; triplet rows are built from the same similar pairs."""
        return self.kind in ("anchor", "hybrid")


_SPECS = (
    LossSpec("cosine", "pair", "CosineSimilarityLoss", "MSE between cosine and label (the notebook's loss)"),
    LossSpec("cosent", "pair", "CoSENTLoss", "ranks every similar pair of a batch above every less similar one"),
    LossSpec("angle", "pair", "AnglELoss", "CoSENT on angle differences (less saturation near cosine 1)"),
    LossSpec("contrastive", "pair", "ContrastiveLoss", "pulls similar pairs together, pushes others past a margin",
             margin_keyword="margin", binary_labels=True),
    LossSpec("online_contrastive", "pair", "OnlineContrastiveLoss", "contrastive on the batch's hard pairs only",
             margin_keyword="margin", binary_labels=True),
    LossSpec("mnrl", "anchor", "MultipleNegativesRankingLoss", "each anchor's positive ranked above the batch's "
             "other positives (and negatives)"),
    LossSpec("triplet", "anchor", "TripletLoss", "anchor closer to positive than to negative by a margin",
             margin_keyword="triplet_margin"),
    LossSpec("hybrid", "hybrid", "", "a pair loss on every row plus MNRL on the similar rows (hybrid_mnrl_weight)"),
    LossSpec("batch_all_triplet", "group_triplet", "BatchAllTripletLoss", "every valid triplet of a P x K batch "
             "(cosine distance)", margin_keyword="margin"),
    LossSpec("batch_hard_triplet", "group_triplet", "BatchHardTripletLoss", "each ticket's hardest positive and "
             "negative in the batch", margin_keyword="margin"),
    LossSpec("batch_semi_hard_triplet", "group_triplet", "BatchSemiHardTripletLoss", "negatives farther than the "
             "positive but within the margin", margin_keyword="margin"),
    LossSpec("batch_hard_soft_margin_triplet", "group_triplet", "BatchHardSoftMarginTripletLoss", "batch-hard "
             "with a soft margin (no margin to set)"),
    LossSpec("group_mnrl", "group_pairs", "MultipleNegativesRankingLoss", "MNRL on one (anchor, positive) per "
             "group: no false in-batch negatives"),
    LossSpec("group_gist", "group_pairs", "GISTEmbedLoss", "group_mnrl with the untuned model vetoing negatives "
             "it finds too close", needs_guide=True),
)
LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in _SPECS}


def names(*, kind: Optional[str] = None, trains_on: Optional[str] = None) -> tuple[str, ...]:
    """Loss names in table order, optionally only those of one `kind` or trained on `pairs` / `tickets`."""
    return tuple(name for name, spec in LOSSES.items()
                 if (kind is None or spec.kind == kind) and (trains_on is None or spec.trains_on == trains_on))


def loss_spec(name: str) -> LossSpec:
    """The spec of a loss by name; a KeyError names the choices (config validation has already refused others)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss '{name}'; choose one of {', '.join(LOSSES)}") from None
