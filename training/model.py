"""The whole sequential model: a SASRec backbone whose item representation fuses a learned
ID embedding with a projection of the item's LLM text embedding.

Item ids are contiguous from 1; id 0 is padding. Sequences are left-padded, and positions
count back from the most recent item, so a history means the same thing whatever the
padded length of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ITEM_REPRS = ("id", "text", "hybrid")
LOSSES = ("ce", "sampled")
BLOCKS = ("prenorm", "sasrec")
POSITIONS = ("absolute", "relative")


class EmbeddingVersionError(ValueError):
    """LLM item embeddings of another recipe than the one a model was built for."""


@dataclass(frozen=True)
class TextTable:
    """LLM embeddings of items 1..N (row i is item i + 1), with the version of their recipe."""

    vectors: torch.Tensor  # (num_items, text_dim)
    version: str


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape; built from `training.params.RetrainParams`, where the defaults live."""

    num_items: int  # real items, ids 1..num_items
    max_len: int  # longest history the model reads
    hidden: int
    layers: int
    heads: int
    dropout: float
    item_repr: str  # "id", "text" or "hybrid"
    text_dim: int  # width of the LLM item embedding; 0 when there is none
    embedding_version: str  # the recipe of the LLM embeddings the model accepts
    loss: str  # "ce": softmax over every item; "sampled": over the batch's targets and
    # uniform negatives, logQ-corrected
    negatives: int  # uniform negatives per batch of the sampled softmax
    whiten_text: bool  # PCA-whiten the LLM embeddings before the adapter
    adapter_width: int  # width of the hidden layer of the adapter from text to hidden
    text_match_window: int  # the text match reads this many of a history's latest items (0: off)
    repeat_bias: bool  # learn how much more (or less) likely an item already seen is
    id_dropout: float  # hybrid: share of items whose ID row is left out in a training step
    consistency: float  # R-Drop's weight: half of it times the symmetric KL divergence between
    # the next-item distributions of two training passes under their own dropout masks (0: one pass)
    block: str  # "prenorm" or "sasrec": how a transformer block is wired (see Block)
    positions: str  # "absolute": a learned embedding per position counted back from the end of
    # the window, added to the input; "relative": a learned attention bias per distance from
    # query to key, so what the model makes of a history does not depend on where in a
    # training window it ends (each prefix is scored as a whole history is at inference)

    def __post_init__(self) -> None:
        if self.item_repr not in ITEM_REPRS:
            raise ValueError(f"item_repr must be one of {ITEM_REPRS}, got {self.item_repr!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if self.consistency < 0:
            raise ValueError(f"consistency must be at least 0, got {self.consistency}")
        if not 0 <= self.id_dropout < 1:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.adapter_width < 1:
            raise ValueError(f"adapter_width must be at least 1, got {self.adapter_width}")
        if self.text_match_window < 0:
            raise ValueError(f"text_match_window must be at least 0, got "
                             f"{self.text_match_window}")
        if self.text_match_window and self.item_repr == "id":
            raise ValueError("the text match needs text embeddings: item_repr 'id' has none")
        if self.item_repr != "id" and self.text_dim <= 0:
            raise ValueError(f"item_repr={self.item_repr!r} needs text embeddings (text_dim > 0)")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, output_dropout: float) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(output_dropout) if output_dropout else nn.Identity()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                last_only: bool = False) -> torch.Tensor:
        """Queries from `queries`, keys and values from `keys` (B, T, C) -> (B, T, C); or the
        last position's output alone (B, 1, C)."""
        B, T, C = keys.shape
        if last_only:
            queries, mask = queries[:, -1:], mask[..., -1:, :]
        q = F.linear(queries, self.qkv.weight[:C], self.qkv.bias[:C])  # (B, Q, C)
        k, v = F.linear(keys, self.qkv.weight[C:], self.qkv.bias[C:]).split(C, dim=2)
        Q = q.shape[1]
        q = q.view(B, Q, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, Q, hs)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, Q, hs)
        y = y.transpose(1, 2).contiguous().view(B, Q, C)  # (B, Q, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """One transformer block, wired as `cfg.block` names.
    "sasrec", as SASRec's reference code (Kang & McAuley, 2018) computes it: queries from the
    normalized stream, keys and values from the stream itself; the sum normalized, and a
    feed-forward of width `hidden` (ReLU, dropout inside) added to it.
    "prenorm", as GPT-2: each sublayer reads the normalized stream and adds to the stream
    itself; a feed-forward of width 4 x `hidden` (GELU)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.sasrec = cfg.block == "sasrec"
        self.ln_1 = nn.LayerNorm(cfg.hidden)
        # SASRec's attention drops its weights only; GPT-2's also drops the projected output
        self.attn = CausalSelfAttention(cfg, output_dropout=0.0 if self.sasrec else cfg.dropout)
        self.ln_2 = nn.LayerNorm(cfg.hidden)
        width = cfg.hidden if self.sasrec else 4 * cfg.hidden
        activation = [nn.Dropout(cfg.dropout), nn.ReLU()] if self.sasrec else [nn.GELU()]
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, width),
            *activation,
            nn.Linear(width, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False
                ) -> torch.Tensor:
        normed = self.ln_1(x)
        y = self.attn(normed, x if self.sasrec else normed, mask, last_only)
        x = (x[:, -1:] if last_only else x) + y
        if self.sasrec:
            x = self.ln_2(x)
            return x + self.mlp(x)
        return x + self.mlp(self.ln_2(x))


class SeqRec(nn.Module):
    """SASRec over fused item representations; scores every item by a dot product.
    The LLM text table is an input, not a weight: it is given at construction (and never
    saved in the state dict), and only in the version the config names."""

    def __init__(self, cfg: ModelConfig, text: TextTable | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.num_items + 1  # items are enumerated from 1; +1 for padding
        if cfg.item_repr != "text":
            self.item_id = nn.Embedding(n, cfg.hidden, padding_idx=0)
            nn.init.normal_(self.item_id.weight, std=0.02)
        if cfg.item_repr != "id":
            if text is None:
                raise ValueError(f"item_repr={cfg.item_repr!r} needs the LLM text table")
            if text.version != cfg.embedding_version:
                raise EmbeddingVersionError(
                    f"the model takes embeddings of version {cfg.embedding_version!r}, "
                    f"not {text.version!r}: re-embed the items with the model's recipe")
            if tuple(text.vectors.shape) != (cfg.num_items, cfg.text_dim):
                raise ValueError(
                    f"text embeddings must have shape {(cfg.num_items, cfg.text_dim)}, "
                    f"got {tuple(text.vectors.shape)}"
                )
            padding = torch.zeros(1, cfg.text_dim)
            item_text = torch.cat([padding, text.vectors.float()])  # (n, text_dim)
            self.register_buffer("item_text", item_text, persistent=False)
            if cfg.whiten_text:
                mean, whitening = pca_whitening(text.vectors.float())
                # saved with the weights: new items of a grown catalog get the same transform
                self.register_buffer("text_mean", mean)
                self.register_buffer("text_whitening", whitening)
            self.text_adapter = nn.Sequential(
                nn.Linear(cfg.text_dim, cfg.adapter_width), nn.GELU(),
                nn.Linear(cfg.adapter_width, cfg.hidden))
        self.matching = False  # the text match weighs in (a Python flag: a static branch)
        if cfg.text_match_window:
            # its weight, fitted on validation after training (training.train.fit_text_match)
            self.register_buffer("text_match", torch.zeros(()))
            self.update_match_table()
            self.register_load_state_dict_post_hook(SeqRec.loaded)
        if cfg.repeat_bias:
            self.repeat_bias = nn.Parameter(torch.zeros(()))
        if cfg.loss == "sampled":
            # each item's share of the training targets, which the trainer sets: how likely
            # the batch's own targets hold it, for the sampled softmax's correction
            share = torch.full((n,), 1.0 / cfg.num_items, dtype=torch.float64)
            share[0] = 0.0
            self.register_buffer("target_share", share, persistent=False)
        if cfg.positions == "absolute":
            self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
            if cfg.block == "sasrec":  # as SASRec's reference code starts them: about the
                nn.init.xavier_normal_(self.pos.weight)  # scale of an item row times sqrt(hidden)
        else:  # one bias per head and distance, shared by the blocks
            self.distance_bias = nn.Parameter(torch.zeros(cfg.heads, cfg.max_len))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.hidden)

    @staticmethod
    def loaded(module: SeqRec, _) -> None:
        """After a state dict is loaded: the match table follows the whitening loaded with the
        weights (a grown catalog's too), and the match weighs in as its loaded weight says."""
        module.update_match_table()
        module.matching = bool(module.text_match)

    def set_text_match(self, weight: float) -> None:
        """The text match's weight; 0: not computed at all (as in training)."""
        self.text_match.fill_(weight)
        self.matching = weight != 0

    def update_match_table(self) -> None:
        """Unit rows of the items' LLM embeddings, whitened as the adapter reads them when it
        does, for the text match: (n, text_dim), padding a zero row."""
        text = self.item_text
        if self.cfg.whiten_text:
            text = (text - self.text_mean) @ self.text_whitening
        table = F.normalize(text, dim=1)
        table[0] = 0.0
        self.register_buffer("match_table", table, persistent=False)

    def text_matches(self, seq: torch.Tensor) -> torch.Tensor:
        """How like the latest `text_match_window` items of each history every item reads: the
        mean cosine of its text with theirs (B, T) -> (B, n); 0 for the history's own items,
        whose score the repeat shift sets. Fine distinctions of text (a brand, a line, a shade)
        that the hidden-wide item rows cannot all keep; the only signal of an item that
        training never saw, beside its text row."""
        recent = self.match_table[seq[:, -self.cfg.text_match_window :]]  # (B, W, D)
        held = (seq[:, -self.cfg.text_match_window :] > 0).unsqueeze(-1)  # (B, W, 1)
        query = (recent * held).sum(1) / held.sum(1).clamp(min=1)  # (B, D)
        return (query @ self.match_table.T).scatter_(1, seq, 0.0)  # (B, n)

    def set_dropout(self, rate: float) -> None:
        """Every dropout of the model (each at `cfg.dropout` when built) at `rate` instead."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = rate
            elif isinstance(module, CausalSelfAttention):
                module.dropout = rate

    def item_embeddings(self) -> torch.Tensor:
        """Representation of every item, padding included: (num_items + 1, hidden)."""
        parts = []
        if self.cfg.item_repr != "text":
            ids = self.item_id.weight
            if self.training and self.cfg.item_repr == "hybrid" and self.cfg.id_dropout:
                # whole rows, so the model learns to score an item from its text alone, as it
                # must for an item new to the catalog (its ID row starts at zero)
                keep = torch.rand(ids.shape[0], 1, device=ids.device) >= self.cfg.id_dropout
                ids = ids * keep / (1 - self.cfg.id_dropout)
            parts.append(ids)
        if self.cfg.item_repr != "id":
            first = self.text_adapter[0]
            weight, bias = first.weight, first.bias  # (hidden, text_dim), (hidden,)
            if self.cfg.whiten_text:  # the adapter of (text - mean) @ whitening, folded into
                weight = weight @ self.text_whitening.T  # its first layer: a (hidden x D)
                bias = bias - weight @ self.text_mean  # product, not an (n x D x D) one
            parts.append(self.text_adapter[1:](F.linear(self.item_text, weight, bias)))
        return torch.stack(parts).sum(0)

    def encode(self, seq: torch.Tensor, items: torch.Tensor | None = None,
               last_only: bool = False) -> torch.Tensor:
        """Hidden state after each position of left-padded histories (B, T) -> (B, T, hidden);
        `last_only`: after the last position alone (B, 1, hidden), the last block computing
        no other position (what scoring a history needs)."""
        seq = seq[:, -self.cfg.max_len :]
        B, T = seq.shape
        items = self.item_embeddings() if items is None else items
        valid = seq > 0  # (B, T)
        x = items[seq] * self.cfg.hidden**0.5  # (B, T, C)
        if self.cfg.positions == "absolute":
            # positions count back from the most recent item: the last column is position 0
            x = x + self.pos(torch.arange(T - 1, -1, -1, device=seq.device))
        x = self.drop(x) * valid.unsqueeze(-1)
        at = torch.arange(T, device=seq.device)
        distance = at.unsqueeze(1) - at  # (T, T): query minus key; causal where >= 0
        # a padded position attends to itself only, so no attention row is empty
        mask = ((distance >= 0) & valid.unsqueeze(1)) | (distance == 0)  # (B, T, T)
        mask = mask.unsqueeze(1)  # (B, 1, T, T)
        if self.cfg.positions == "relative":
            bias = self.distance_bias[:, distance.clamp(min=0)]  # (nh, T, T)
            mask = bias.masked_fill(~mask, float("-inf"))  # (B, nh, T, T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only and i == len(self.blocks) - 1)
        return self.ln_f(x)

    def forward(self, seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of the next item at every non-padded target position, one per target: (M,).
        Training averages it (over all processes under DDP). With `cfg.consistency`, two
        passes under their own dropout masks: their mean cross-entropy plus half the consistency
        weight times the symmetric KL divergence of their next-item distributions (R-Drop)."""
        seq, targets = seq[:, -self.cfg.max_len :], targets[:, -self.cfg.max_len :]
        items = self.item_embeddings()
        keep = (targets > 0) & (seq > 0)  # (B, T): a target needs a history before it
        targets = targets[keep]  # (M,)
        prefixes = None
        if self.cfg.repeat_bias:
            T = seq.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).tril()  # (T, T)
            prefixes = (seq.unsqueeze(1) * causal)[keep]  # (M, T): the items up to each target
        if self.cfg.loss == "ce":  # every item but padding is a candidate
            candidates, log_q, labels = None, None, targets - 1
        else:
            candidates, log_q = self.sampled_candidates(targets)
            labels = torch.searchsorted(candidates, targets)
        ranked = items[1:] if candidates is None else items[candidates]  # (K, C)
        passes = 2 if self.training and self.cfg.consistency else 1
        logits = []  # (M, K) per pass
        for _ in range(passes):
            h = self.encode(seq, items)[keep]  # (M, C)
            scores = h @ ranked.T  # (M, K)
            if log_q is not None:
                scores = scores - log_q
            if prefixes is not None:
                self.shift_repeats_(scores, prefixes, candidates, first=1)
            logits.append(scores.float())
        if passes == 1:
            return F.cross_entropy(logits[0], labels, reduction="none")
        return RDropLoss.apply(*logits, labels, self.cfg.consistency)

    def sampled_candidates(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The items a sampled softmax ranks each target among, sorted and shared by the batch:
        its own targets and `negatives` uniform draws (every item once the draws would cover
        the catalog); and the log of each one's chance to be a candidate, subtracted from its
        score so that popular items, more often candidates, are not pushed down for it (the
        logQ correction of sampled softmax): (K,), (K,)."""
        n, draws = self.cfg.num_items, self.cfg.negatives
        if draws >= n:
            every = torch.arange(1, n + 1, device=targets.device)
            return every, torch.zeros(n, device=targets.device)
        uniform = torch.randint(1, n + 1, (draws,), device=targets.device)
        candidates = torch.unique(torch.cat([targets, uniform]))  # (K,) sorted
        # missed by all of the batch's M targets and by every uniform draw
        missed = (1 - self.target_share[candidates]) ** len(targets) * (1 - 1 / n) ** draws
        return candidates, torch.log1p(-missed).float()

    def shift_repeats_(self, scores: torch.Tensor, histories: torch.Tensor,
                       candidates: torch.Tensor | None = None, first: int = 0) -> torch.Tensor:
        """Add the learned shift, in place, to the score of every item each history holds
        (once, however often it holds it): scores (R, n + 1 - first) of the items first..n
        (column 0 padding when first is 0), or (R, K) of the sorted `candidates` (K,);
        histories (R, T). Touches R x T scores, never the whole (R, K) matrix. Returns
        `scores`."""
        if candidates is None:
            columns, held = histories - first, histories > 0
        else:
            columns = torch.searchsorted(candidates, histories).clamp(max=len(candidates) - 1)
            held = (candidates[columns] == histories) & (histories > 0)
        rows = torch.arange(len(histories), device=histories.device).unsqueeze(1)  # (R, 1)
        K = scores.shape[1]
        at = torch.unique((rows * K + columns)[held])  # each (row, column) pair once
        shift = self.repeat_bias.to(scores.dtype).expand(len(at))  # bf16 scores on a GPU
        return scores.index_put_((at // K, at % K), shift, accumulate=True)

    @torch.no_grad()
    def score_next(self, seq: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Score of every item as the next one after each history: (B, T) -> (B, n).
        Column 0 (padding) scores -inf. `items`: `item_embeddings()`, when computed already."""
        scores = self.state_scores(seq, items)
        if self.cfg.repeat_bias:
            self.shift_repeats_(scores, seq[:, -self.cfg.max_len :])
        return scores

    def state_scores(self, seq: torch.Tensor, items: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """`score_next` without the repeat shift: each item's dot product with the history's
        last hidden state, plus its text match's weight times its `text_matches` (B, T) ->
        (B, n), column 0 -inf; all a ranking that leaves out the history's own items needs."""
        items = self.item_embeddings() if items is None else items
        h = self.encode(seq, items, last_only=True)[:, -1]  # (B, C)
        scores = h @ items.T  # (B, n)
        if self.matching:
            scores = scores + self.text_match * self.text_matches(seq[:, -self.cfg.max_len :])
        scores[:, 0] = float("-inf")
        return scores


def pca_whitening(vectors: torch.Tensor, eps: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and matrix that decorrelate `vectors` (N, D) and give each direction unit variance:
    (x - mean) @ matrix. Directions of less than `eps` of the mean variance are not amplified
    beyond it. LLM embeddings crowd into a narrow cone; whitened, their differences
    are what the adapter sees."""
    mean = vectors.mean(0)  # (D,)
    cov = torch.cov((vectors - mean).T)  # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
    floor = eps * eigenvalues.mean()
    matrix = eigenvectors / (eigenvalues.clamp(min=0) + floor).sqrt()  # (D, D)
    return mean, matrix.float()


class RDropLoss(torch.autograd.Function):
    """Per target, from the logits `a` and `b` (M, K) of two passes under their own dropout
    masks and the targets' columns `labels` (M,): the mean of the two cross-entropies plus
    `weight` / 2 times the symmetric KL divergence of the two softmaxes (R-Drop, Liang et al.
    2021). Its gradient is written out: fewer passes over the (M, K) matrices than autograd
    makes of the same expression (measured on Beauty: docs/benchmarks.md, "R-Drop"). With
    p = softmax(a), q = softmax(b), d = a - b:
    d/da = (p - onehot) / 2 + weight / 2 * (p - q + p * (d - <p, d>)),
    d/db = (q - onehot) / 2 + weight / 2 * (q - p - q * (d - <q, d>))."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, weight: float
                ) -> torch.Tensor:
        log_p, log_q = a.log_softmax(1), b.log_softmax(1)
        at = labels.unsqueeze(1)
        loss = (log_p.gather(1, at) + log_q.gather(1, at)).squeeze(1) / -2
        d = log_p.sub_(log_q)  # a - b, less a constant per row that the KL does not see
        p, q = a.softmax(1), log_q.exp_()
        p_d, q_d = (p * d).sum(1), (q * d).sum(1)  # <p, d>, <q, d>: (M,)
        ctx.save_for_backward(p, q, d, p_d, q_d, labels)
        ctx.weight = weight
        return loss + weight / 2 * (p_d - q_d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p, q, d, p_d, q_d, labels = ctx.saved_tensors
        half = ctx.weight / 2
        grads = []
        for own, other, own_d, sign in ((p, q, p_d, 1.0), (q, p, q_d, -1.0)):
            g = d - own_d.unsqueeze(1)  # (M, K)
            g.mul_(sign * half).add_(0.5 + half).mul_(own).add_(other, alpha=-half)
            g[torch.arange(len(labels), device=g.device), labels] -= 0.5
            grads.append(g.mul_(grad.unsqueeze(1)))
        return grads[0], grads[1], None, None
