"""The main job on the built-in sample: incidents -> split tickets and pairs -> training -> judged on search.

Needs no files and no network: the incidents are synthetic (sample.py), the model is the packaged
all-MiniLM-L6-v2. OUT ends up holding the sample, its pairs and everything `train` writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from tickettune.core.files import atomic_output_dir
from tickettune.training.config import TrainConfig, trains_on_tickets
from tickettune.training.loss_registry import loss_spec

SAMPLE_FILE = "sample_incidents.csv"
PAIRS_DIR = "pairs"


@dataclass(frozen=True)
class DemoSize:
    """Small enough to finish in minutes on 2 CPU cores, big enough for an interval that excludes zero."""

    incidents: int = 2000
    pairs_per_phase: int = 400
    eval_pairs: int = 300
    test_pairs: int = 600
    train_tickets: int = 600  # group losses: tickets trained on (of ~1,400), so that training takes ~2 minutes


def run_demo(config: TrainConfig, out: Path, *, overwrite: bool = False, size: DemoSize = DemoSize(), seed: int = 0,
             say=print):
    from tickettune.data.pairs import PairOptions, build_pairs, summary_tables, write_pair_dir
    from tickettune.data.sample import generate_sample, write_sample
    from tickettune.data.tickets import read_tickets
    from tickettune.training.dataset import from_pairset
    from tickettune.training.run import train

    out = Path(out)
    with atomic_output_dir(out, overwrite) as tmp:
        sample_path = write_sample(generate_sample(size.incidents, seed), tmp / SAMPLE_FILE)
        say(f"1/3  {size.incidents} synthetic incidents written to {out / SAMPLE_FILE}")
        tickets = read_tickets(sample_path, group_by="problem_id", mask_pii=config.mask_pii)
        # Split by ticket: held-out incidents of the problems training saw, the case search is deployed for (a new
        # incident of a known problem). Split by problem, the sample's few test problems are told apart perfectly
        # by the untuned model already (precision@10 0.995), so there would be nothing to measure.
        options = PairOptions(seed=seed, pairs_per_phase=size.pairs_per_phase, eval_pairs=size.eval_pairs,
                              test_pairs=size.test_pairs, model=config.model_name, split_by="ticket",
                              difficulty="tfidf" if trains_on_tickets(config) else "model")
        pairset = build_pairs(tickets, options, config.model_name)
        write_pair_dir(pairset, tmp / PAIRS_DIR, command=f"tickettune demo (seed {seed})")
        say(f"2/3  split by ticket (grouped by problem_id): held-out tickets and test pairs written to {out / PAIRS_DIR}")
        for table in summary_tables(pairset.datacard):
            say(table)
        if config.stage == "head":
            say(f"3/3  training a linear head on the frozen {config.model_name}'s vectors of the train incidents "
                "(grouped by problem_id: links of the same problem), then searching the held-out incidents for "
                "their problem's other incidents: the same-problem check")
        else:
            say(f"3/3  training {config.model_name} with LoRA ({config.loss}, lr {config.lr:g}, "
                f"epochs {'/'.join(f'{e:g}' for e in config.phase_epochs)}), then searching the held-out incidents for "
                "their problem's other incidents: the same-problem check")
        on_tickets = loss_spec(config.loss).trains_on == "tickets"
        if on_tickets and (config.max_train_tickets or size.train_tickets + 1) > size.train_tickets:
            config = config.model_copy(update={"max_train_tickets": size.train_tickets})
        result = train(config, from_pairset(pairset, str(out / PAIRS_DIR)), tmp / "run", overwrite=True)
        for item in (tmp / "run").iterdir():
            shutil.move(str(item), str(tmp / item.name))
        (tmp / "run").rmdir()
    return replace(result, out=out)
