"""The `tickettune` command: a thin layer over the pipeline modules. Every user error exits 2 with one line.

Over 400 lines because each command's typer options (with their help texts) are long; every command body is a
few lines over one stage function, so the file reads as a table of contents.
"""

from __future__ import annotations

import errno
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

try:  # typer >= 0.20 vendors its own click; older versions use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from tickettune.core.errors import UserError
from tickettune.core.models import DEFAULT_MODEL
from tickettune.data.pairs import DIFFICULTY_METHODS, SPLIT_UNITS, TEST_DIFFICULTIES, PairOptions
from tickettune.training.config import PHASE_MODES
from tickettune.training.loss_registry import LOSSES, names

PAIR_DEFAULTS = PairOptions()  # the `pairs` command's defaults are the library's
ENCODER_HELP = ("encoder: torch (PyTorch weights), onnx (an ONNX file on ONNX Runtime, from tickettune export --onnx) "
                "or auto (onnx for an export folder with an ONNX file, its int8 one first)")
ONNX_FILE_HELP = "ONNX file to run, relative to the model folder (e.g. onnx/model.onnx); implies --backend onnx"
PROBE_HELP = ("same-problem probe: a ticket file whose groups are filed duplicates (e.g. a duplicate-linked export); "
              "its duplicates' MRR@10 and accuracy@10 are reported beside retrieval (repeatable)")
SET_HELP = ("override a knob: key=value (repeatable); e.g. --set lr=3e-4, --set loss=NAME with NAME one of "
            + ", ".join(names()) + " (`tickettune presets` describes them)")
PROBE_GROUP_HELP = "the duplicate column of the --probe files: once for all, or once per probe (default problem_id)"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune sentence-embedding models on IT tickets with LoRA and curriculum learning.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def presets() -> None:
    """Print the built-in recipes side by side."""
    from tickettune.training.config import PRESET_NOTES, PRESETS, TrainConfig

    configs = {name: TrainConfig(**values) for name, values in PRESETS.items()}
    keys = ["stage", "label_kind", "head_epochs", "head_lr", "head_margin", "head_keep_weight", "head_temperature",
            "lr", "phase_epochs", "warmup_steps", "warmup_ratio", "batch_size", "max_seq_length", "lora_r", "lora_alpha",
            "lora_dropout", "loss", "weight_decay", "scheduler", "eval_subset", "use_lora", "update_scales"]
    table = Table(title="tickettune presets (every other knob: `tickettune train --help`)")
    table.add_column("knob")
    for name in configs:
        table.add_column(name, justify="right")
    table.add_row("", *[f"[dim]{PRESET_NOTES[name]}[/dim]" for name in configs])
    for key in keys:
        values = [getattr(c, key) for c in configs.values()]
        shown = ["all" if key == "eval_subset" and v is None else ("-" if v is None else
                 "/".join(f"{e:g}" for e in v) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v))
                 for v in values]
        table.add_row(key, *shown)
    console.print(table)
    losses = Table(title="losses (--set loss=NAME; hybrid mixes MNRL with --set hybrid_pair_loss=NAME)")
    losses.add_column("loss", no_wrap=True)
    for column in ("trains on", "batch rows", "sentence-transformers class", "what it does"):
        losses.add_column(column)
    for spec in LOSSES.values():
        losses.add_row(spec.name, spec.trains_on, ", ".join(spec.columns), spec.library_class or "tickettune's own",
                       spec.description)
    console.print(losses)


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="model folder or id to evaluate"),
    pairs: Optional[Path] = typer.Option(None, "--pairs", "-p", help="pair file, or a directory from `tickettune pairs` "
                                         "(its representative and hard test pairs, and its test tickets)"),
    tickets: Optional[Path] = typer.Option(None, "--tickets", "-t", help="ticket file to search: every ticket is the "
                                           "corpus, tickets whose group has another member are the queries"),
    group_by: Optional[str] = typer.Option(None, "--group-by", "-g", help="with --tickets: tickets that share this column "
                                           "are relevant to each other (default problem_id)"),
    text_column: Optional[List[str]] = typer.Option(None, "--text-column", help="with --tickets: column(s) that make the "
                                                    "text (default short_description,description)"),
    queries: Optional[int] = typer.Option(1000, "--queries", min=1, help="query tickets (a seeded sample)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="model to compare against"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    max_seq_length: Optional[int] = typer.Option(None, help="tokens kept per text (model's own when unset)"),
    folds: int = typer.Option(5, help="cross-validation folds for the F1 threshold", min=2),
    resamples: int = typer.Option(1000, help="paired bootstrap resamples", min=100),
    seed: int = typer.Option(0, help="seed of folds, query sample and bootstrap"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write metrics.json, report.md and report.html here"),
    overwrite: bool = typer.Option(False, help="replace an existing --json file or --out directory"),
    train_pairs: Optional[Path] = typer.Option(None, "--train-pairs", help="the model's training pairs (file or `pairs` "
                                               "directory) to check the test texts against; default: the fingerprints "
                                               "`train` stored in the model folder"),
    allow_leakage: bool = typer.Option(False, help="evaluate even when test texts were among the model's training texts"),
    probe: Optional[List[Path]] = typer.Option(None, "--probe", help=PROBE_HELP),
    probe_group: Optional[List[str]] = typer.Option(None, "--probe-group", help=PROBE_GROUP_HELP),
    calibrate: bool = typer.Option(False, help="with --tickets: fit the duplicate/related tiers on half the groups, "
                                   "measure them on the other half, write calibration.json into the model folder"),
    duplicate_precision: float = typer.Option(0.9, help="with --calibrate: precision the duplicate tier targets"),
    related_precision: float = typer.Option(0.6, help="with --calibrate: precision the related tier targets"),
) -> None:
    """Judge a model (and a baseline): retrieval on held-out tickets, same-problem probes, then pair sets; bootstrap
    intervals of each change."""
    from tickettune.evaluation.judge import run_evaluation

    if json_path is not None and json_path.exists() and not overwrite:
        raise UserError(f"{json_path} already exists; pass --overwrite to replace it or choose another --json")
    with console.status("loading and encoding"):
        results = run_evaluation(model, pairs=pairs, tickets=tickets, group_by=group_by, text_columns=text_column,
                                 probes=probe, probe_groups=probe_group, baseline=baseline,
                                 max_seq_length=max_seq_length, queries=queries, folds=folds, resamples=resamples,
                                 seed=seed, out=out, overwrite=overwrite, train_pairs=train_pairs,
                                 allow_leakage=allow_leakage, say=console.print,
                                 calibrate={"duplicate": duplicate_precision, "related": related_precision}
                                 if calibrate else None)
    _print_results(results, about=f" ({model})", compared=bool(baseline))
    if json_path is not None:
        from tickettune.core.jsonio import write_json

        write_json(json_path, results)
        console.print(f"metrics written to {json_path}")
    if out is not None:
        console.print(f"report written to {out / 'report.html'}")


@app.command()
def train(
    pairs: Optional[Path] = typer.Option(None, "--pairs", "-p", help="directory made by `tickettune pairs`"),
    train_file: Optional[Path] = typer.Option(None, "--train", help="pre-generated train pairs (any pair format)"),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="pre-generated eval pairs"),
    test_file: Optional[Path] = typer.Option(None, "--test", help="pre-generated test pairs"),
    preset: Optional[str] = typer.Option(None, "--preset", help="built-in recipe (see `tickettune presets`)"),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (may say `preset: NAME`)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model folder or id"),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory"),
    phases: str = typer.Option(PHASE_MODES[0], help="keep the train file's phases, train one phase (single), or split by "
                                            "the base model's difficulty (difficulty)"),
    overwrite: bool = typer.Option(False, help="replace an existing OUT (or discard an interrupted run)"),
    resume: bool = typer.Option(False, help="continue an interrupted run of the same OUT from its last checkpoint"),
    merge: bool = typer.Option(False, help="also write OUT/model-merged: the LoRA adapter folded into a full model"),
    allow_leakage: bool = typer.Option(False, help="train even when test texts also appear in the train pairs"),
    tickets: Optional[Path] = typer.Option(None, "--tickets", "-t", help="train on a ticket export directly: split, "
                                           "held-out tickets and test pairs are made as `tickettune pairs` makes them "
                                           "(written to OUT/pairs); the default recipe is then the group recipe"),
    group_by: Optional[str] = typer.Option(None, "--group-by", "-g", help="with --tickets: tickets that share this "
                                           "column are similar (default problem_id)"),
    text_column: Optional[List[str]] = typer.Option(None, "--text-column", help="with --tickets: column(s) that make "
                                                    "the text (default short_description,description)"),
    budget: Optional[str] = typer.Option(None, "--budget", help="time the run may take on this machine, e.g. 15m, 90s, "
                                         "1h (head stage: measured throughput -> train tickets and epochs; default 15m)"),
    probe: Optional[List[Path]] = typer.Option(None, "--probe", help=PROBE_HELP),
    probe_group: Optional[List[str]] = typer.Option(None, "--probe-group", help=PROBE_GROUP_HELP),
    feedback: Optional[Path] = typer.Option(None, "--feedback", help="agents' verdicts (`tickettune feedback export`): "
                                            "confirmed suggestions train as positives, rejected ones as hard "
                                            "negatives; a fifth of the queries is held out and judged"),
) -> None:
    """Fine-tune (a head on the frozen encoder, or the encoder over curriculum phases); writes OUT/model, config.yaml,
    training_log.json/.csv, metrics.json and the report."""
    from tickettune.training.run import run_train

    result = run_train(out, pairs=pairs, train_file=train_file, eval_file=eval_file, test_file=test_file,
                       tickets=tickets, group_by=group_by, text_columns=text_column, preset=preset,
                       config_file=config_file, sets=sets, model=model, budget=budget, probes=probe,
                       probe_groups=probe_group, phases=phases, overwrite=overwrite, resume=resume, merge=merge,
                       allow_leakage=allow_leakage, status=console.status, feedback=feedback)
    if result.metrics:
        _print_results(result.metrics, about=f": {result.config.model_name} tuned vs untuned")
        console.print(f"results written to {result.out} ({', '.join(result.files)})")


@app.command()
def search(
    model: str = typer.Option(..., "--model", "-m", help="model folder (e.g. OUT/model) or id"),
    tickets: Path = typer.Option(..., "--tickets", "-t", help="ticket file: ServiceNow export or CSV/JSONL with a text column"),
    query: Optional[str] = typer.Option(None, "--query", "-q", help="text of the new ticket"),
    ticket: Optional[str] = typer.Option(None, "--ticket", help="number of a ticket in the file (left out of its own results)"),
    k: int = typer.Option(10, "-k", help="how many similar tickets to show", min=1),
    text_column: Optional[str] = typer.Option(None, help="column holding the ticket text (default: the reader's choice)"),
    threshold: Optional[float] = typer.Option(None, help="mark scores at or above this (default: model.threshold "
                                                           "in metrics.json beside the model folder)"),
    cache_dir: Optional[Path] = typer.Option(None, help="where indexes are kept (default ~/.cache/tickettune/index)"),
    show: Optional[List[str]] = typer.Option(None, "--show", help="also show this ticket column (repeatable)"),
    backend: str = typer.Option("auto", "--backend", help=ENCODER_HELP),
    onnx_file: Optional[str] = typer.Option(None, help=ONNX_FILE_HELP),
    filters: Optional[List[str]] = typer.Option(None, "--filter", help="only tickets with FIELD=VALUE (repeatable; "
                                                "assignment_group, cmdb_ci, category, subcategory, state, priority, "
                                                "contact_type; opened_after/opened_before/updated_after/"
                                                "updated_before=ISO date)"),
) -> None:
    """Find the tickets most similar to a new one (--query) or to a known one (--ticket), via a cached index."""
    from tickettune.data.tickets import resolve_column
    from tickettune.serving.filters import parse_cli_filters
    from tickettune.serving.search import hits_table, read_ticket_file, similar_tickets

    table = read_ticket_file(tickets, text_column)
    columns = [resolve_column(table, name, "--show") for name in show or ()]
    frame = table.frame
    spec = parse_cli_filters(filters or [], list(frame.columns))
    for note in table.notes:
        err_console.print(note, markup=False)
    with console.status(f"searching {len(frame)} tickets"):
        result = similar_tickets(frame, model, query=query, ticket=ticket, k=k, threshold=threshold, cache_dir=cache_dir,
                                 model_backend=backend, onnx_file=onnx_file, filters=spec)
    console.print(hits_table(result, columns))


@app.command()
def serve(
    model: str = typer.Option(..., "--model", "-m", help="model folder (e.g. OUT/model) or id"),
    tickets: Path = typer.Option(..., "--tickets", "-t", help="ticket file: ServiceNow export or CSV/JSONL with a text column"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface; use --token then)"),
    port: int = typer.Option(8000, help="TCP port", min=1, max=65535),
    workers: int = typer.Option(1, help="server processes, each with its own copy of the model", min=1),
    token: Optional[str] = typer.Option(None, envvar="TICKETTUNE_TOKEN", show_envvar=True,
                                        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health"),
    threshold: Optional[float] = typer.Option(None, help="mark scores at or above this as duplicates (default: "
                                                           "model.threshold in metrics.json beside the model folder)"),
    store: Optional[str] = typer.Option(None, help="where tickets added or synced are kept: a folder (SQLite file "
                                                    "store.sqlite inside), a .sqlite file, or postgresql://USER@HOST/DB "
                                                    "(default: the folder FILE.added beside the ticket file)"),
    sync_from: Optional[str] = typer.Option(None, help="keep the tickets in step with this ServiceNow instance (URL, "
                                                        "or a Table API URL with sysparm_query); credentials from "
                                                        "SERVICENOW_* variables"),
    every: str = typer.Option("5m", help="with --sync-from: how often to read the instance's changes (30s, 5m, 1h)"),
    cache_dir: Optional[Path] = typer.Option(None, help="where indexes are kept (default ~/.cache/tickettune/index)"),
    text_column: Optional[str] = typer.Option(None, help="column holding the ticket text (default: the reader's choice)"),
    group_column: Optional[str] = typer.Option(None, help="column returned as a result's group (default: assignment_group)"),
    batching: bool = typer.Option(True, help="encode requests that arrive together in one batch"),
    threads: Optional[int] = typer.Option(None, help="torch threads per worker (default: the cores but one, "
                                                       "shared among the workers)", min=1),
    index: str = typer.Option("auto", help="exact (every ticket scanned), ivf (FAISS: a search in about a millisecond, "
                                           "built once into the cache) or auto (exact up to 200,000 tickets)"),
    backend: str = typer.Option("auto", "--backend", help=ENCODER_HELP),
    onnx_file: Optional[str] = typer.Option(None, help=ONNX_FILE_HELP),
    feedback_db: Optional[str] = typer.Option(None, help="database URL keeping POST /feedback verdicts (default: "
                                              "the --store's own database; or postgresql://USER@HOST/DB)"),
) -> None:
    """Serve similar-incident search over HTTP: POST /similar, /tickets, /embed, /feedback, /sync, GET /clusters,
    /filters, /health, a page at /, docs at /docs."""
    import importlib.util

    if any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn", "sqlalchemy")):
        raise UserError("tickettune serve needs fastapi, uvicorn and sqlalchemy, which are not all installed; "
                        "pip install 'tickettune[serve]'")
    from tickettune.serving.app import ServeSettings, run_server
    from tickettune.serving.sync import parse_every

    settings = ServeSettings(model=model, tickets=str(tickets), store=store or f"{tickets}.added",
                             cache_dir=str(cache_dir) if cache_dir else None, text_column=text_column,
                             group_column=group_column, threshold=threshold, token=token or None, batching=batching,
                             threads=threads, index=index, sync_from=sync_from, sync_every=parse_every(every),
                             model_backend=backend, onnx_file=onnx_file, feedback_db=feedback_db)
    run_server(settings, host, port, workers, say=lambda line: err_console.print(line, markup=False))


feedback_app = typer.Typer(no_args_is_help=True, help="Agents' verdicts on suggestions (POST /feedback of `serve`).")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    out: Path = typer.Option(..., "--out", "-o", help="pair file to write (JSONL: text1, text2, label, verdict, ...)"),
    tickets: Optional[Path] = typer.Option(None, "--tickets", "-t", help="the ticket file `serve` ran with: its "
                                           "default store FILE.added holds the feedback"),
    store: Optional[str] = typer.Option(None, help="the --store `serve` used (folder, SQLite file or database URL)"),
    database: Optional[str] = typer.Option(None, help="the database URL `serve --feedback-db` used"),
    overwrite: bool = typer.Option(False, help="replace an existing OUT"),
) -> None:
    """Write every verdict as a labelled pair (duplicate 1, related 0.5, unrelated 0) for `train --feedback FILE`."""
    from tickettune.serving.feedback import FeedbackStore, default_url

    if sum(x is not None for x in (tickets, store, database)) != 1:
        raise UserError("say where the feedback is: pass exactly one of --tickets FILE, --store DIR or --database URL")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    url = database or default_url(store if store is not None else f"{tickets}.added")
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise UserError(f"{url.removeprefix('sqlite:///')}: no feedback stored there; check the path (serve keeps it "
                        "in its --store, by default the folder FILE.added beside the ticket file)")
    count = FeedbackStore.open(url).export(out)
    console.print(f"{count} verdicts written to {out}", markup=False)


@app.command()
def pull(
    instance: str = typer.Option(..., "--instance", envvar="SERVICENOW_INSTANCE", show_envvar=True,
                                 help="instance URL, e.g. https://acme.service-now.com"),
    out: Path = typer.Option(..., "--out", "-o", help="ticket file to write (Table API JSON, with the pull's mark)"),
    table: str = typer.Option("incident", help="table to read"),
    query: str = typer.Option("", help="encoded query, e.g. 'active=true^assignment_group.name=Network' (copy it "
                                       "from a list view: right-click the breadcrumb > Copy query)"),
    fields: Optional[str] = typer.Option(None, help="comma-separated fields to read (default: number, texts, group, "
                                                    "state, problem and resolution fields)"),
    since_last: bool = typer.Option(False, help="read only what changed since FILE's pull and merge it in"),
    page_size: int = typer.Option(1000, help="records per request (the Table API allows up to 10,000)"),
) -> None:
    """Read incidents from a ServiceNow instance (credentials from SERVICENOW_* variables; see the README)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tickettune.sources.pull import Source
    from tickettune.sources.pull import pull as run_pull
    from tickettune.sources.servicenow import Credentials, TableClient

    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    source = Source(instance=instance, table=table, query=query, fields=wanted, page_size=page_size)
    terminal = err_console.is_terminal
    said = [0.0]
    with TableClient(instance, Credentials.from_environment()) as client, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=err_console, transient=True, disable=not terminal) as progress:
        task = progress.add_task(f"reading {table}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total if total >= 0 else None)
            if not terminal and time.monotonic() - said[0] > 10:  # a log gets a line now and then instead of a bar
                said[0] = time.monotonic()
                err_console.print(f"reading {table}: {done} of {total if total >= 0 else '?'} records", markup=False)

        summary = run_pull(client, source, out, since_last=since_last, progress=update)
    console.print(f"{out}: {summary.records} records ({summary.changed} new or changed, {summary.removed} removed; "
                  f"{summary.received} received in {summary.requests} requests, {summary.retries} retried) "
                  f"in {summary.seconds:.1f} s", markup=False, soft_wrap=True)


@app.command()
def export(
    model: str = typer.Option(..., "--model", "-m", help="trained model folder (e.g. OUT/model) or id"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    merge: bool = typer.Option(False, help="write the standalone PyTorch model (LoRA folded into the weights)"),
    onnx: bool = typer.Option(False, help="write onnx/model.onnx for SentenceTransformer(DIR, backend='onnx')"),
    quantize: Optional[str] = typer.Option(None, help="with --onnx, also write an int8 model (dynamic quantization): int8"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Make a trained model deployable: merged standalone folder (--merge) and/or ONNX (--onnx [--quantize int8])."""
    from tickettune.training.export import export_model

    with console.status("exporting"):
        result = export_model(model, out, merge=merge, onnx=onnx, quantize=quantize, overwrite=overwrite)
    console.print("LoRA adapter folded into the weights" if result.merged_adapter
                  else "model had no LoRA adapter; exported as is")
    for form, cosine in result.cosines.items():
        console.print(f"check {form}: lowest cosine to the source model on probe texts {cosine:.6f}")
    console.print(f"written to {result.folder}: {', '.join(result.files)}")
    if result.quantized_file:
        console.print(f"load the int8 model with SentenceTransformer('{result.folder}', backend='onnx', "
                      f"model_kwargs={{'file_name': '{result.quantized_file}'}})", markup=False)


@app.command()
def sample(
    out: Path = typer.Option(..., "--out", "-o", help="file to write: .csv (ServiceNow list export), .json (Table API) or .xlsx"),
    n: int = typer.Option(1000, "-n", "--n", help="number of incidents", min=10),
    seed: int = typer.Option(0, help="the same seed gives the same incidents"),
    labels: bool = typer.Option(False, "--labels", help="headers as display labels (Short description) instead of field names"),
    overwrite: bool = typer.Option(False, help="replace an existing file"),
) -> None:
    """Write a built-in sample of SYNTHETIC ServiceNow incidents: problem clusters in different words, and near misses."""
    from tickettune.data.sample import generate_sample, write_sample

    frame = generate_sample(n, seed)
    write_sample(frame, out, labels=labels, overwrite=overwrite)
    linked = int(((frame["problem_id"] != "") | (frame["parent_incident"] != "")).sum())
    console.print(f"{len(frame)} synthetic incidents (invented, not real data; {linked} linked to "
                  f"{frame['problem_id'].replace('', None).nunique()} problems) written to {out}")


def _command_line(ctx: typer.Context) -> str:
    """The running command with the options that differ from their defaults, for the data card."""
    import shlex

    parts = ["tickettune", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or value in ([], ()):
            continue
        if param.param_type_name == "argument":
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif getattr(param, "is_flag", False):
            parts.append(param.opts[0] if value else (param.secondary_opts or param.opts)[0])
        else:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                parts += [param.opts[0], str(item)]
    return shlex.join(parts)


def _weights(text: Optional[str]) -> Optional[dict]:
    if text is None:
        return None
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UserError(f"--grade-weights item {item!r} is not FIELD=NUMBER; write e.g. problem_id=1,subcategory=0.6")
    return weights


@app.command()
def pairs(
    ctx: typer.Context,
    tickets: Path = typer.Argument(..., help="ticket export: ServiceNow CSV/XLSX/Table API JSON, or CSV/JSONL with "
                                             "a text and a label column"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (train.jsonl, eval.jsonl, test.jsonl, datacard.json)"),
    text_column: Optional[List[str]] = typer.Option(None, "--text-column", "-t", help="column(s) that make the text, in "
                                                    "order (repeat or comma-separate; default short_description,description)"),
    group_by: Optional[str] = typer.Option(None, "--group-by", "--label-column", "-g", help="tickets that share this column "
                                           "are similar (default problem_id; problem_id and parent_incident also link tickets)"),
    seed: int = typer.Option(PAIR_DEFAULTS.seed, help="seed of the split and of the sampling"),
    pairs_per_phase: int = typer.Option(PAIR_DEFAULTS.pairs_per_phase, min=1, help="train pairs per curriculum phase "
                                        "(easy, medium, hard)"),
    eval_pairs: int = typer.Option(PAIR_DEFAULTS.eval_pairs, min=2, help="eval pairs"),
    test_pairs: int = typer.Option(PAIR_DEFAULTS.test_pairs, min=2, help="test pairs (hard, and as many representative)"),
    eval_fraction: float = typer.Option(PAIR_DEFAULTS.eval_fraction, help="share of tickets for eval"),
    test_fraction: float = typer.Option(PAIR_DEFAULTS.test_fraction, help="share of tickets for test"),
    difficulty: str = typer.Option(PAIR_DEFAULTS.difficulty, help=f"{' or '.join(DIFFICULTY_METHODS)}: the base "
                                   "model's cosine, or lexical (needs no model)"),
    model: str = typer.Option(PAIR_DEFAULTS.model, "--model", "-m", help="base model that scores difficulty"),
    test_difficulty: str = typer.Option(PAIR_DEFAULTS.test_difficulty, help=f"{' or '.join(TEST_DIFFICULTIES)}: eval and "
                                        "hard test pairs as lexically (TF-IDF) hard as the hardest third of train "
                                        "pairs, or unfiltered"),
    hard_negatives: bool = typer.Option(False, help="add a `negative` column (nearest ticket of another group) for MNRL/triplet"),
    graded: bool = typer.Option(False, help="graded labels from a field hierarchy instead of 0/1"),
    grade_weights: Optional[str] = typer.Option(None, help="with --graded: FIELD=WEIGHT,... "
                                                "(default GROUP=1,subcategory=0.6,category=0.3)"),
    split_by: str = typer.Option(PAIR_DEFAULTS.split_by, help=f"{', '.join(SPLIT_UNITS)}: kept whole in one split: auto "
                                 "(group when there are 30+ groups), group (test groups unseen in training), ticket "
                                 "(same groups, other tickets)"),
    max_pairs_per_ticket: int = typer.Option(PAIR_DEFAULTS.max_pairs_per_ticket, min=2, help="a ticket appears in at "
                                             "most this many pairs per split"),
    near_duplicate: float = typer.Option(PAIR_DEFAULTS.near_duplicate, min=0.0, max=1.0, help="word-overlap cosine at "
                                         "which an eval/test ticket counts as a copy of a train ticket and is left out"),
    mask_pii: bool = typer.Option(False, "--mask-pii", help="mask e-mails, phone numbers, IPs, URLs and user ids first"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
) -> None:
    """Build curriculum pairs from tickets: leakage-free split, balanced labels, easy/medium/hard phases, hard test set."""
    from tickettune.core.files import check_output_dir
    from tickettune.data.pairs import PairOptions, build_pairs, summary_tables, write_pair_dir
    from tickettune.data.tickets import read_tickets

    options = PairOptions(seed=seed, pairs_per_phase=pairs_per_phase, eval_pairs=eval_pairs, test_pairs=test_pairs,
                          eval_fraction=eval_fraction, test_fraction=test_fraction, difficulty=difficulty, model=model,
                          test_difficulty=test_difficulty, hard_negatives=hard_negatives, graded=graded,
                          grade_weights=_weights(grade_weights), split_by=split_by,
                          max_pairs_per_ticket=max_pairs_per_ticket, near_duplicate=near_duplicate)
    check_output_dir(out, overwrite)
    table = read_tickets(tickets, text_column, group_by, mask_pii=mask_pii)
    with console.status(f"building pairs from {len(table)} tickets"):
        pairset = build_pairs(table, options)
        write_pair_dir(pairset, out, overwrite, command=_command_line(ctx))
    for table in summary_tables(pairset.datacard):
        console.print(table)
    for note in pairset.datacard["notes"]:
        err_console.print(f"note: {note}", markup=False)
    console.print(f"pairs written to {out} (command and seed in {out / 'datacard.json'})", markup=False)


@app.command()
def check(
    paths: List[Path] = typer.Argument(..., help="directory made by `tickettune pairs`, or pair files (the name says the "
                                                  "role: test, eval/dev/val, else train)"),
    difficulty: Optional[str] = typer.Option(None, help="score difficulty with the base model (model), TF-IDF (tfidf) or "
                                             "skip it (none); default: what the datacard says, else model"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model (default: the datacard's, else "
                                        f"{DEFAULT_MODEL})"),
    near_duplicate: float = typer.Option(PAIR_DEFAULTS.near_duplicate, min=0.0, max=1.0, help="word-overlap cosine at "
                                         "which a test text counts as a "
                                         "copy of a train text"),
    max_words: int = typer.Option(512, min=1, help="texts longer than this many words are flagged"),
) -> None:
    """Check pair files: phases rise in difficulty, labels balanced, no duplicates, no test text in train. Exit 1 on failure."""
    from tickettune.data.check import findings_table, load_sets, run_checks

    sets, datacard = load_sets(paths)
    card = (datacard or {}).get("difficulty") or {}
    method = difficulty or card.get("method") or "model"
    with console.status("checking pairs"):
        findings = run_checks(sets, method, model or card.get("model") or DEFAULT_MODEL, near_duplicate, max_words)
    console.print(findings_table(findings, title=f"tickettune check {' '.join(map(str, paths))}"))
    failed = [f.check for f in findings if f.status == "FAIL"]
    console.print(f"{len(failed)} check(s) failed: {'; '.join(failed)}" if failed else "all checks passed", markup=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="where the sample, pairs, model and report go"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="base model (folder or id)"),
    preset: str = typer.Option("recommended", help="recipe to train with (see `tickettune presets`)"),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="override a config key, e.g. --set lr=3e-4"),
    seed: int = typer.Option(0, help="seed of the sample, the pairs and training"),
    overwrite: bool = typer.Option(False, help="replace an existing OUT"),
) -> None:
    """The main job on a built-in synthetic incident sample: pairs, LoRA training, comparison with the untuned model."""
    import time

    from tickettune.core.files import check_output_dir
    from tickettune.demo import run_demo
    from tickettune.training.config import resolve_config

    config = resolve_config(preset, sets=[f"seed={seed}", *(sets or [])], model_name=model)
    check_output_dir(out, overwrite)
    started = time.perf_counter()
    result = run_demo(config, out, overwrite=overwrite, seed=seed, say=console.print)
    _print_results(result.metrics, about=": untuned vs fine-tuned")
    search = result.metrics.get("retrieval")
    if search is not None:
        from tickettune.evaluation.report import fmt_ci

        console.print(f"same-problem check: {search['model']['n_queries']} held-out incidents each searched "
                      f"{search['model']['n_corpus']} held-out incidents for the other incidents of its problem "
                      f"(problem_id); MRR@10 {search['baseline']['mrr@10']:.3f} -> {search['model']['mrr@10']:.3f} "
                      f"{fmt_ci(search, 'mrr@10')}, precision@10 {search['baseline']['precision@10']:.3f} -> "
                      f"{search['model']['precision@10']:.3f} {fmt_ci(search, 'precision@10')}")
    console.print(f"done in {(time.perf_counter() - started) / 60:.1f} min; open {out / 'report.html'}")


@app.command()
def estimate(
    pairs: Path = typer.Option(..., "--pairs", "-p", help="directory made by `tickettune pairs`"),
    preset: Optional[str] = typer.Option(None, "--preset", help="built-in recipe (see `tickettune presets`)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model folder or id"),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help=SET_HELP),
    steps: int = typer.Option(5, "--steps", min=1, help="optimizer steps to time (after 1 warm-up step)"),
    phases: str = typer.Option(PHASE_MODES[0], help=f"as for `train`: {', '.join(PHASE_MODES)}"),
) -> None:
    """Estimate how long `train` takes here: times a few real training steps and one eval pass; writes nothing."""
    from tickettune.data.pairs_io import has_train_tickets
    from tickettune.training.config import resolve_config
    from tickettune.training.dataset import check_phase_mode, load_pairs
    from tickettune.training.estimate import estimate_run, estimate_table

    check_phase_mode(phases)
    config = resolve_config(preset, None, sets, tickets=has_train_tickets(pairs), model_name=model)
    data = load_pairs(pairs)
    if config.stage == "head":
        from tickettune.training.head_training import describe_rate, estimate_head

        with console.status(f"timing {config.model_name}'s encoding on this machine"):
            throughput, plan = estimate_head(config, data)
        console.print(f"head stage, {config.model_name} ({describe_rate(throughput)}): {plan.describe()}")
        return
    with console.status(f"timing {steps} training steps of {config.model_name}"):
        result = estimate_run(config, data, steps, phases)
    console.print(estimate_table(result, f"Estimated training time on this machine: {preset or 'default preset'}, "
                                         f"{config.model_name}, {pairs}"))


@app.command()
def sweep(
    pairs: Path = typer.Option(..., "--pairs", "-p", help="directory made by `tickettune pairs` (its test pairs are not used)"),
    trials: int = typer.Option(..., "--trials", "-n", min=1, help="trials this worker runs (the study's total is the sum "
                                                                  "over its workers)"),
    storage: str = typer.Option(..., "--storage", help="database shared by the workers: sqlite:///sweep.db (one machine), "
                                                       "postgresql://USER:PASSWORD@HOST/DB or mysql+pymysql://... (several)"),
    study_name: str = typer.Option("tickettune", "--study-name", help="workers with the same name share one study"),
    preset: Optional[str] = typer.Option(None, "--preset", help="base recipe for the knobs not drawn (see `tickettune presets`)"),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="base YAML config instead of a preset"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model folder or id"),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="fix a knob: key=value (repeatable); a knob set "
                                                                      "here is not drawn"),
    max_epochs: int = typer.Option(3, min=1, help="epochs per phase are drawn from 1..N"),
    best_config: Optional[Path] = typer.Option(None, "--best-config", help="write the best trial as a config for "
                                                                          "`tickettune train --config FILE`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="keep every trial's run in OUT/STUDY/trial-NNNN "
                                                                 "(default: deleted after each trial)"),
    allow_leakage: bool = typer.Option(False, help="sweep even when test texts also appear in the train pairs"),
    overwrite: bool = typer.Option(False, help="replace an existing --best-config file"),
) -> None:
    """Search learning rate, epochs, LoRA rank, loss and schedule with Optuna, maximising eval Spearman (or eval_metric)."""
    from tickettune.data.pairs_io import has_train_tickets
    from tickettune.training.config import parse_set, resolve_config
    from tickettune.training.sweep import SearchSpace, Sweep, describe, write_best_config

    if best_config is not None and best_config.exists() and not overwrite:
        raise UserError(f"{best_config} already exists; pass --overwrite to replace it or choose another --best-config")
    tickets = has_train_tickets(pairs)
    if preset is None and config_file is None and tickets:  # the default ticket recipe trains a head: nothing to sweep
        preset = "recommended-lora"
    base = resolve_config(preset, config_file, sets, tickets=tickets, model_name=model, pairs_dir=str(pairs.resolve()))
    space = SearchSpace(epochs=(1, max_epochs), fixed=tuple(parse_set(sets)))
    runner = Sweep(base, pairs, storage, study_name, space, out, allow_leakage=allow_leakage)
    err_console.print(f"study '{study_name}': {len(runner.study.trials)} trials so far; this worker runs {trials}",
                      markup=False)
    runner.run(trials, show_progress=True, say=lambda line: err_console.print(line, markup=False))
    console.print(runner.table())
    trial, config = runner.best()
    console.print(f"best: trial {trial.number}, eval {config.eval_metric} {trial.value:.4f} ({describe(trial.params)})",
                  markup=False)
    if best_config is not None:
        write_best_config(config, best_config)
        console.print(f"best config written to {best_config}; train it with `tickettune train --config {best_config} "
                      "-o OUT`", markup=False)


def _print_results(results: dict, about: str, compared: bool = True) -> None:
    """One table per judged set (retrieval first), then, against a baseline, the one-line verdict per set."""
    from tickettune.evaluation.report import results_tables, verdict

    for table in results_tables(results, model_title="Fine-tuned" if compared else "Model", about=about):
        console.print(table)
    if compared:
        console.print(verdict(results), markup=False)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _interrupted() -> int:
    err_console.print("error: interrupted; nothing half-written was left (training resumes with --resume)", markup=False)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    from tickettune.core.models import offline_environment

    offline_environment()
    try:
        code = app(args=args, prog_name="tickettune", standalone_mode=False)
        if code == 130:  # typer swallows Ctrl-C in a command and returns 130 without a word
            return _interrupted()
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError:
        return 0  # typer has already printed the help
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "tickettune"
        err_console.print(f"error: {_one_line(exc.format_message())} (see `{command} --help`)", markup=False)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except click_exceptions.ClickException as exc:
        err_console.print(f"error: {_one_line(exc.format_message())}", markup=False)
        return 2
    except UserError as exc:
        if debug:
            raise
        err_console.print(f"error: {_one_line(exc)}", markup=False)
        return 2
    except OSError as exc:
        if debug:
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        fix = {errno.ENOSPC: "free disk space and run it again", errno.EDQUOT: "free disk space and run it again",
               errno.EACCES: "fix the permissions or choose another path", errno.EPERM: "fix the permissions or choose "
               "another path", errno.EROFS: "choose a writable path"}.get(exc.errno or 0, "free disk space or fix permissions")
        err_console.print(f"error: cannot write or read{where}: {exc.strerror or exc}; {fix}", markup=False)
        return 2
    except MemoryError:
        err_console.print("error: out of memory; lower --set batch_size or max_seq_length", markup=False)
        return 2
    except Exception as exc:  # last resort: still one line, never a traceback unless --debug
        if debug:
            raise
        err_console.print(f"error: {type(exc).__name__}: {_one_line(exc)[:300]} (rerun with --debug for the traceback)",
                          markup=False)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
