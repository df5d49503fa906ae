"""The scheduled job: ingest the inbox, embed what is new in the catalog, retrain when new
interactions were accepted, and leave one artifact that says what happened."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.embed_items import embed_items
from flows.ingest import ingest_inbox
from flows.retrain import retrain
from ingestion.state import Stores, default_state_dir
from training.params import RetrainParams


@flow(name="nightly")
def nightly(state_dir: Path | None = None, params: RetrainParams | None = None,
            serving_url: str | None = None, max_bad_share: float = 0.2,
            encoder: str | None = None, always_retrain: bool = False) -> dict:
    """Ingest every inbox batch (a rejected batch fails this run at the end, after the rest
    went through), embed new or changed items, and retrain when a batch was accepted (or
    `always_retrain`)."""
    log = get_run_logger()
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    started = datetime.now(UTC).isoformat()
    ingested = ingest_inbox(state_dir=stores.state_dir, max_bad_share=max_bad_share,
                            encoder=encoder, return_state=True)
    batches = stores.ledger.all()
    new = (batches["status"] == "accepted") & (batches["received_at"] >= started)
    accepted = batches.loc[new, "file_name"].tolist()
    embed_items(state_dir=stores.state_dir, encoder=encoder)
    summary = {"accepted": accepted, "ingest": ingested.message or ingested.name}
    if accepted or always_retrain:
        result = retrain(state_dir=stores.state_dir, params=params, serving_url=serving_url)
        summary |= {"version": result["version"], "promoted": result["promoted"],
                    "reason": result["reason"]}
    else:
        log.info("no new interactions accepted: no retrain")
    lines = [f"# Nightly: {len(accepted)} batch(es) accepted", "",
             f"- ingest: {summary['ingest']} ({', '.join(accepted) or 'nothing new'})"]
    if "version" in summary:
        lines.append(f"- retrain: version {summary['version']}, "
                     f"{'promoted' if summary['promoted'] else 'not promoted'}: "
                     f"{summary['reason']}")
    create_markdown_artifact(key="nightly", markdown="\n".join(lines),
                             description=lines[0].lstrip("# "))
    if ingested.is_failed():
        raise RuntimeError(f"ingest failed: {ingested.message}")  # after the retrain, visibly
    return summary
