"""The policy prompt, built as token ids under a context budget, and joining prompts with completions.

A prompt is the chat template applied to [system, user] with a generation prompt; the user message holds the
goal, the last k actions and the latest observation:

    Goal: Download the March report

    Previous actions:
    3. click(e12)
    4. fill(e5, "march")

    Observation:
    - generic [ref=e1]:
      - link "Reports" [ref=e3]

When it does not fit in `max_prompt_tokens`, the observation's tail is cut (at a line, then a character
boundary) and a marker line says how much was left out; `PromptResult.truncated` reports it. Nothing is
dropped silently.

Training sequences are made by concatenating the recorded prompt ids and the sampled completion ids
(`join_turns`), never by re-tokenising text: a BPE may merge tokens across the prompt/completion boundary
or tokenise the decoded completion differently from how it was sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_SYSTEM_PROMPT = (
    "You are a web agent. You see the page as an accessibility tree with element ids like e12. "
    'Reply with exactly one action: click(eN), fill(eN, "text"), select(eN, "option"), press("Key"), '
    'scroll("down"), goto("url"), back(), wait(), hover(eN), drag(eN, eM) or done("answer"). '
    "Where the page gives boxes, click(x, y), hover(x, y) and drag(x1, y1, x2, y2) take points in pixels."
)
TRUNCATION_MARKER = "[... observation truncated: {omitted} of {total} lines not shown]"


def format_user_message(goal: str, history: Sequence[str], observation: str, first_step: int = 1) -> str:
    """The user turn: goal, numbered previous actions (numbering starts at `first_step`), observation."""
    if history:
        hist = "\n".join(f"{first_step + i}. {a}" for i, a in enumerate(history))
        hist_block = f"Previous actions:\n{hist}"
    else:
        hist_block = "Previous actions: none"
    return f"Goal: {goal}\n\n{hist_block}\n\nObservation:\n{observation}"


class _ChatTokenizer(Protocol):
    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


@dataclass(frozen=True)
class PromptResult:
    """A built prompt. `dropped_history`: how many earlier actions are not shown (beyond k, or for budget)."""

    ids: list[int]
    text: str
    truncated: bool
    dropped_history: int

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


class PromptTooLongError(ValueError):
    """The system prompt and the goal alone exceed the token budget."""


class PromptBuilder:
    """Builds policy prompts as token ids with the tokenizer's chat template, within `max_prompt_tokens`.

    Priority when the budget is tight: system prompt and goal (always; PromptTooLongError if they alone do
    not fit), then the last `history_k` actions, then the observation, whose tail is cut first. Only if
    the observation is cut down to nothing are the oldest of the k actions dropped too.
    """

    def __init__(
        self,
        tokenizer: _ChatTokenizer,
        system: str = DEFAULT_SYSTEM_PROMPT,
        max_prompt_tokens: int = 2048,
        history_k: int = 4,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "tokenizer has no chat_template; set one (e.g. agentrl.policy.tokenizer.CHATML_TEMPLATE)"
            )
        if max_prompt_tokens < 1 or history_k < 0:
            raise ValueError("max_prompt_tokens must be >= 1 and history_k >= 0")
        self.tokenizer = tokenizer
        self.system = system
        self.max_prompt_tokens = max_prompt_tokens
        self.history_k = history_k

    def render(self, goal: str, observation: str, history: Sequence[str], first_step: int = 1) -> str:
        """The prompt text (chat template with generation prompt), no budget applied."""
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": format_user_message(goal, history, observation, first_step)},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(
        self, goal: str, observation: str, history: Sequence[str], first_step: int
    ) -> tuple[str, list[int]]:
        text = self.render(goal, observation, history, first_step)
        return text, list(self.tokenizer.encode(text, add_special_tokens=False))

    def build(self, goal: str, observation: str, history: Sequence[str] = ()) -> PromptResult:
        """The prompt for the next action. `history`: all earlier actions of the episode, oldest first."""
        history = list(history)
        kept = history[max(0, len(history) - self.history_k) :] if self.history_k else []
        dropped = len(history) - len(kept)
        budget = self.max_prompt_tokens
        while True:
            first = dropped + 1
            text, ids = self._encode(goal, observation, kept, first)
            if len(ids) <= budget:
                return PromptResult(ids, text, False, dropped)
            cut = self._cut_observation(goal, observation, kept, first)
            if cut is not None:
                return PromptResult(cut[1], cut[0], True, dropped)
            if not kept:
                _, bare = self._encode(goal, "", [], first)
                raise PromptTooLongError(
                    f"system prompt + goal take {len(bare)} tokens, more than max_prompt_tokens={budget}"
                )
            kept = kept[1:]
            dropped += 1

    def _cut_observation(
        self, goal: str, observation: str, history: list[str], first: int
    ) -> tuple[str, list[int]] | None:
        """Longest head of the observation (whole lines, then part of a line) that fits, plus a marker."""
        lines = observation.split("\n")
        total = len(lines)

        def with_head(n_lines: int, partial: str = "") -> str:
            head = lines[:n_lines] + ([partial] if partial else [])
            omitted = total - n_lines
            return "\n".join([*head, TRUNCATION_MARKER.format(omitted=omitted, total=total)])

        def fits(obs: str) -> tuple[str, list[int]] | None:
            text, ids = self._encode(goal, obs, history, first)
            return (text, ids) if len(ids) <= self.max_prompt_tokens else None

        best = fits(with_head(0))
        if best is None:
            return None
        lo, hi = 0, total - 1  # largest n in [0, total-1] whole lines that fit (all lines never fit here)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(with_head(mid)) is not None:
                lo = mid
            else:
                hi = mid - 1
        best = fits(with_head(lo)) or best
        nxt = lines[lo] if lo < total else ""
        clo, chi = 0, len(nxt) - 1  # then as much of the next line as fits
        while clo < chi:
            mid = (clo + chi + 1) // 2
            if fits(with_head(lo, nxt[:mid])) is not None:
                clo = mid
            else:
                chi = mid - 1
        if clo > 0:
            best = fits(with_head(lo, nxt[:clo])) or best
        return best


# ---------------------------------------------------------------- training sequences
@dataclass(frozen=True)
class JoinedTurn:
    """Prompt ids + completion ids, with a mask that is 1 on completion tokens (the ones trained on)."""

    input_ids: list[int]
    completion_mask: list[int]
    prompt_len: int


def join_turns(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> JoinedTurn:
    """Concatenate recorded ids (no re-tokenisation). The mask marks the completion tokens."""
    p, c = list(prompt_ids), list(completion_ids)
    return JoinedTurn(input_ids=p + c, completion_mask=[0] * len(p) + [1] * len(c), prompt_len=len(p))


def join_completion(completion: Any) -> JoinedTurn:
    """`join_turns` for a `generation.Completion` (anything with `prompt_ids` and `token_ids`)."""
    return join_turns(completion.prompt_ids, completion.token_ids)
