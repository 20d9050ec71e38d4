"""Trajectories shaped like a rollout's, without a browser: for tests and for `benchmarks/gpu_check.py`,
which runs on machines that have a GPU but no Chromium.

* `scored_trajectories`: small click pages scored by the real `HFGenerator` (the behaviour log-probs a
  rollout would record, at ``temperature``);
* `shaped_trajectories`: random ids at a chosen scale (a group's first prompt shared, later prompts
  distinct), for memory and speed measurements.
"""

from __future__ import annotations

from typing import Any

import torch

from agentrl.learner.config import SHORT_SYSTEM_PROMPT
from agentrl.learner.rollout import Trajectory, Turn
from agentrl.policy.hf_backend import HFGenerator
from agentrl.policy.prompt import PromptBuilder

PAGE = '- main [ref=e1]:\n  - heading "Save" [level=2] [ref=e2]\n  - button "{b}" [ref=e3]\n  - link "Open" [ref=e4]'


def scored_trajectories(
    model: Any, tok: Any, groups: int = 3, size: int = 4, turns: int = 2, temperature: float = 1.0
) -> list[Trajectory]:
    """``groups`` x ``size`` episodes of 1..``turns`` turns over 3 candidates, with varied rewards; ids and
    log-probs from the model itself, the choice's log-prob under softmax(seq / temperature)."""
    gen = HFGenerator(model, tok)
    builder = PromptBuilder(tok, system=SHORT_SYSTEM_PROMPT)
    cands = ["click(e2)", "click(e3)", "click(e4)"]
    out = []
    for g in range(groups):
        for i in range(size):
            tr = Trajectory("t", seed=g, group=g, sample=i)
            for k in range(1 + (i + g) % turns):
                prompt = builder.build("Click the button.", PAGE.format(b=f"B{g}{k}"), [t.action for t in tr.turns]).ids
                sc = gen.score_candidates([prompt], [cands])[0]
                c = (i + k) % 3
                tr.turns.append(Turn(
                    prompt_ids=prompt, completion_ids=list(sc.token_ids[c]), logprobs=list(sc.token_logprobs[c]),
                    action=cands[c], candidates=cands, candidate_ids=[list(x) for x in sc.token_ids], candidate_index=c,
                    candidate_entropy=sc.entropy(temperature), seq_logprob_restricted=float(sc.log_probs(temperature)[c]),
                    reward=float(c == 1) * (1 + g) / 2,
                ))
            out.append(tr)
    return out


def shaped_trajectories(
    vocab: int, groups: int, size: int, turns: int, prompt_len: int, cands: int, cand_len: int, seed: int = 0
) -> list[Trajectory]:
    """Random-id trajectories at scale: ``cands`` candidates of ``cand_len`` ids after ``prompt_len``-id
    prompts. Behaviour log-probs are placeholders (-3.7): overwrite them before measuring ratios."""
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(10, vocab, (n,), generator=g).tolist()

    out = []
    for grp in range(groups):
        first = ids(prompt_len)
        for i in range(size):
            tr = Trajectory("t", seed=grp, group=grp, sample=i)
            for k in range(turns):
                cid = [ids(cand_len) for _ in range(cands)]
                c = (i + k) % cands
                tr.turns.append(Turn(
                    prompt_ids=first if k == 0 else ids(prompt_len), completion_ids=cid[c], logprobs=[0.0] * cand_len,
                    action=f"a{c}", candidates=[f"a{j}" for j in range(cands)], candidate_ids=cid, candidate_index=c,
                    candidate_entropy=0.0, seq_logprob_restricted=-3.7, reward=float((i + grp) % 2),
                ))
            out.append(tr)
    return out
