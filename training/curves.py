"""Training curves as one figure: the loss and the validation NDCG@10 per epoch."""

from __future__ import annotations

from matplotlib.figure import Figure


def plot_curves(history: list[dict[str, float]], best_epoch: int) -> Figure:
    """Two panels over epochs, the kept (best validation) epoch marked on both."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss, ndcg = fig.subplots(1, 2)
    loss.plot(epochs, [row["loss"] for row in history], marker=".")
    loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ndcg.plot(epochs, [row["valid_ndcg_at_10"] for row in history], marker=".", color="C1")
    ndcg.set(xlabel="epoch", ylabel="NDCG@10", title="validation NDCG@10")
    for ax in (loss, ndcg):
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="kept")
        ax.grid(alpha=0.3)
    ndcg.legend()
    return fig
