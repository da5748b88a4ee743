"""A linear head on frozen encoder vectors: learns from every labelled train ticket at the price of one encoding pass.

A LoRA step of 64 tickets costs 4-5 s on 2 CPU cores, so an encoder fine-tune sees a few thousand tickets; the
encoder's vectors of all of them, cached on disk (vector_cache.py), cost one pass, and a d x d map trained on
them costs seconds. The map is saved as sentence-transformers' own Dense module followed by Normalize, so
`SentenceTransformer(OUT/model)`, `search`, `serve` and `export` load it without tickettune.

What the labels may teach is the heart of it (the lesson of the IT tickets: same topic is not same problem):

- **coarse** groups (topic, category, assignment group) are evidence of *difference* only. Pulling every
  same-topic pair together flattens the fine structure that finds duplicates (same-topic search +0.03,
  duplicate recall@10 -0.06 to -0.10). So the loss pushes pairs of different groups below a cosine `margin`
  (squared hinge) and keeps each same-group pair's cosine where the untuned encoder had it (squared error,
  weight `keep_weight`); it never pulls.
- **problem** links (problem_id, parent_incident, filed duplicates) are evidence of *sameness*. The loss is a
  supervised contrastive one (InfoNCE, `temperature`: every other ticket of the same problem in the batch is a
  positive, every other ticket a negative), plus the same keep term over all pairs so that what the links do
  not speak about stays where it was. Batches hold several tickets of each of a few problems (P x K), since
  random batches of small groups would hold almost no positives.

Agents' verdicts (`train --feedback`) are a third kind of evidence, about pairs: a rejected suggestion
(unrelated) is pushed below the cosine `feedback_margin` from its query (squared hinge), a confirmed one
(duplicate) pulled towards it (squared distance of the cosine from 1); a related verdict says neither. Each
kind is averaged over its own pairs in a sample of the verdicts at every step, the two kinds count alike, and
the term is weighted by `feedback_weight`.

In all, the map starts at the identity (the untuned encoder), the best epoch by the caller's eval score is
kept (epoch 0, the identity, included), and the learned change can be scaled back towards the identity
(W_s = I + s (W - I)) by `train`'s update-scale choice. Hand-written rather than a sentence-transformers loss:
its losses take texts and run the encoder; these run on cached vectors, with the untuned cosines as targets.

    >>> head = fit_head(vectors, groups, HeadObjective(kind="coarse"), epochs=10)   # doctest: +SKIP
    >>> tuned = head.apply(vectors)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

# Groups split by group (pairs.MIN_GROUPS_FOR_GROUP_SPLIT) are many and small: problem links. A handful of large
# groups (the IT tickets' 8 topics) are coarse labels.
MIN_PROBLEM_GROUPS = 30
MAX_PROBLEM_GROUP_SHARE = 0.05  # a problem holds at most this share of the tickets (at the median)
PER_GROUP = 4  # tickets of each problem in a P x K batch


def head_eval_metric(requested: str, kind: str) -> str:
    """The eval metric that picks the head's epoch and scale: as requested, or for `auto` MRR@10 with problem links
    (groups of two or three make precision@10 a coarse, noisy count) and precision@10 with coarse groups."""
    if requested != "auto":
        return requested
    return "mrr@10" if kind == "problem" else "precision@10"


def label_kind(groups: Sequence[object], requested: str = "auto") -> str:
    """`coarse` or `problem`: what the groups are evidence of. `auto` calls them problems when there are
    MIN_PROBLEM_GROUPS or more groups of two or more tickets and the median such group is small."""
    if requested != "auto":
        return requested
    sizes = pd.Series(list(groups), dtype=object).astype(str).value_counts()
    multi = sizes[sizes >= 2]
    if len(multi) >= MIN_PROBLEM_GROUPS and multi.median() <= MAX_PROBLEM_GROUP_SHARE * sizes.sum():
        return "problem"
    return "coarse"


@dataclass(frozen=True)
class HeadObjective:
    """What the head learns from the labels (see the module docstring): `kind` coarse or problem."""

    kind: str = "coarse"
    margin: float = 0.1
    keep_weight: float = 1.0
    temperature: float = 0.1
    feedback_margin: float = 0.3
    feedback_weight: float = 1.0

    def feedback_loss(self, query: torch.Tensor, suggested: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The verdicts' pair term (unweighted): `query` and `suggested` tuned unit rows, `labels` 1 confirmed
        (duplicate), 0 rejected (unrelated), 0.5 related (no term). The mean of the rejected pairs' term and the
        confirmed pairs' term, each averaged over its own pairs: agents confirm far more often than they reject
        (4 to 1 in benchmarks/feedback.py), and a rejection must not be outvoted by the count of confirmations."""
        cos = (query * suggested).sum(dim=1)
        rejected, confirmed = labels == 0, labels == 1
        terms = [torch.relu(cos[rejected] - self.feedback_margin).pow(2).mean() if rejected.any() else None,
                 (1 - cos[confirmed]).pow(2).mean() if confirmed.any() else None]
        present: list[torch.Tensor] = [t for t in terms if t is not None]
        return torch.stack(present).mean() if present else cos.sum() * 0

    def loss(self, tuned: torch.Tensor, untuned: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of one batch: `tuned` and `untuned` unit rows of the same tickets, `labels` their group codes."""
        cos = tuned @ tuned.T
        base = untuned @ untuned.T
        same = labels[:, None] == labels[None, :]
        off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        if self.kind == "coarse":
            different = ~same
            push = torch.relu(cos - self.margin)[different].pow(2).mean() if different.any() else cos.sum() * 0
            kept = same & off_diagonal
            keep = (cos - base)[kept].pow(2).mean() if kept.any() else cos.sum() * 0
            return push + self.keep_weight * keep
        positives = same & off_diagonal
        logits = (cos / self.temperature).masked_fill(~off_diagonal, -1e9)
        log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
        has = positives.any(dim=1)
        contrastive = -(log_prob * positives).sum(dim=1)[has] / positives.sum(dim=1)[has] if has.any() else cos.sum() * 0
        keep = (cos - base)[off_diagonal].pow(2).mean()
        return contrastive.mean() + self.keep_weight * keep


@dataclass
class LinearHead:
    """x -> normalise(W x + b) on unit vectors. Identity (the untuned encoder) when W = I, b = 0."""

    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def identity(cls, dim: int) -> "LinearHead":
        return cls(np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32))

    def scaled(self, scale: float) -> "LinearHead":
        """The change from the identity scaled by `scale` (0: identity, 1: as trained)."""
        eye = np.eye(len(self.weight), dtype=np.float32)
        return LinearHead((eye + scale * (self.weight - eye)).astype(np.float32), (scale * self.bias).astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = np.asarray(vectors, dtype=np.float32) @ self.weight.T + self.bias
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def modules(self) -> list:
        """The head as sentence-transformers modules: Dense (no activation) then Normalize."""
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize

        dim = len(self.weight)
        dense = Dense(dim, dim, bias=True, activation_function=torch.nn.Identity(),
                      init_weight=torch.tensor(self.weight), init_bias=torch.tensor(self.bias))
        return [dense, Normalize()]


def _batches(codes: np.ndarray, kind: str, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of row batches: random rows (coarse), or P x K batches of problems topped up with other rows."""
    n = len(codes)
    if kind == "coarse":
        order = rng.permutation(n)
        return [order[i:i + size] for i in range(0, n - size + 1, size)] or [order]
    sizes = np.bincount(codes)
    members = [np.flatnonzero(codes == g) for g in rng.permutation(np.flatnonzero(sizes >= 2))]
    batches: list[list[int]] = []
    current: list[int] = []
    for rows in members:
        current.extend(rng.permutation(rows)[:PER_GROUP].tolist())
        if len(current) >= size // 2:
            batches.append(current)
            current = []
    if len(current) >= 2:
        batches.append(current)
    mixed = []
    for batch in batches:  # the other half: any tickets, as negatives (singletons included)
        others = rng.choice(n, min(n, size), replace=False)
        others = others[~np.isin(others, batch)][:size - len(batch)]
        mixed.append(np.concatenate([np.asarray(batch), others]))
    return mixed


def fit_head(vectors: np.ndarray, groups: Sequence[object] | np.ndarray, objective: HeadObjective, *, epochs: int = 20,
             lr: float = 1e-3, batch_size: int = 256, seed: int = 0,
             score: Callable[[LinearHead], float] | None = None,
             on_epoch: Callable[[int, float, float | None], None] | None = None,
             feedback: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[LinearHead, list[dict]]:
    """Train a LinearHead on unit `vectors` (one row per ticket) and their `groups`; returns the kept head and a
    log of every epoch (loss, and the eval score when `score` is given).

    feedback: agents' verdicts as (query vectors, suggestion vectors, labels), unit rows; each step adds the
    objective's feedback term over up to `batch_size` of them (a seeded sample).

    score(head) -> a number where higher is better (e.g. eval precision@10 through the head); with it the best
    epoch is kept, the identity (epoch 0) included, so the head never scores below the untuned encoder on eval.
    on_epoch(epoch, loss, score) is called after each epoch (progress).
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    codes = pd.factorize(pd.Series(list(groups), dtype=object).astype(str))[0]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.tensor(np.asarray(vectors, dtype=np.float32))
    y = torch.tensor(codes)
    dim = x.shape[1]
    weight = torch.nn.Parameter(torch.eye(dim))
    bias = torch.nn.Parameter(torch.zeros(dim))
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    if feedback is not None:
        asked, suggested, verdicts = (torch.tensor(np.asarray(a, dtype=np.float32)) for a in feedback)
        if len(verdicts) == 0 or objective.feedback_weight == 0:
            feedback = None
    best = LinearHead.identity(dim)
    best_score = score(best) if score is not None else -math.inf
    log = [{"epoch": 0, "loss": None, "score": None if score is None else best_score}]
    for epoch in range(1, epochs + 1):
        losses = []
        for batch_rows in _batches(codes, objective.kind, batch_size, rng):
            rows = torch.as_tensor(batch_rows)
            batch = x[rows]
            tuned = torch.nn.functional.normalize(batch @ weight.T + bias, dim=1)
            loss = objective.loss(tuned, batch, y[rows])
            if feedback is not None:
                chosen = torch.as_tensor(rng.choice(len(verdicts), min(len(verdicts), batch_size), replace=False))
                query, suggestion = (torch.nn.functional.normalize(v[chosen] @ weight.T + bias, dim=1)
                                     for v in (asked, suggested))
                loss = loss + objective.feedback_weight * objective.feedback_loss(query, suggestion, verdicts[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        head = LinearHead(weight.detach().numpy().copy(), bias.detach().numpy().copy())
        value = score(head) if score is not None else None
        mean_loss = float(np.mean(losses)) if losses else math.nan
        log.append({"epoch": epoch, "loss": mean_loss, "score": value})
        if on_epoch is not None:
            on_epoch(epoch, mean_loss, value)
        if value is None:
            best = head
        elif value > best_score:
            best, best_score = copy.deepcopy(head), value
    return best, log
