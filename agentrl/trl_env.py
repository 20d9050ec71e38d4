"""agentrl tasks for TRL's `GRPOTrainer(environment_factory=...)`: `AgentrlToolEnv`'s public methods are the
action language's verbs as named tools (``click(element)``, ``fill(element, text)``, ``select``, ``press``,
``scroll``, ``goto``, ``back``, ``upload``, ``done``; the pointer verbs ``click_at(x, y)``, ``hover(element)``,
``hover_at(x, y)``, ``drag(source, target)`` and ``drag_points(points)``: one tool per form, since a tool has
one signature), each returning the page as text after the action;
``reset(task=, seed=, ...)`` (called by TRL with the dataset row's fields) starts the episode and returns
the goal and the first page. The reward functions read the episode's milestone rewards:

    trainer = GRPOTrainer(model, reward_funcs=[milestone_reward], train_dataset=tasks_dataset(specs, seeds),
                          environment_factory=AgentrlToolEnv.factory(specs), args=GRPOConfig(...))

Every instance drives a sync `make_env` env; all of them share one Chromium (the process's `BrowserHost`).
A tool call after the episode ended returns that fact, not an action; an unparseable argument is the env's
error observation (the episode goes on, as in agentrl's own rollout). An episode that ended truncated by
the infrastructure (a dead browser) scores None in the reward functions, so TRL leaves it out (NaN) rather
than train on it as a zero. Public methods are tools, so the state lives in attributes (``ret``,
``success``, ``ended``, ``milestones``, ``infra_failure``) and the env closes with ``_close()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentrl.envs.actions import format_action
from agentrl.envs.browser import BrowserEnvConfig
from agentrl.envs.factory import make_env
from agentrl.learner.rollout import MAX_STEPS_REASON
from agentrl.taskspec import TaskSpec


class AgentrlToolEnv:
    """One rollout's env for TRL (pooled and reset by TRL); see the module docstring."""

    def __init__(self, specs: Sequence[TaskSpec], config: BrowserEnvConfig | None = None) -> None:
        if not specs:
            raise ValueError("AgentrlToolEnv needs at least one task")
        self._specs = {s.id: s for s in specs}
        self._default = sorted(self._specs)
        self._config = config or BrowserEnvConfig(record=False, keep_episode_dirs=False)
        self._env: Any = None
        self._task = ""
        self.ret, self.success, self.ended, self.steps = 0.0, False, False, 0
        self.truncation_reason: str | None = None
        self.milestones: list[str] = []

    @classmethod
    def factory(cls, specs: Sequence[TaskSpec], config: BrowserEnvConfig | None = None) -> Callable[[], AgentrlToolEnv]:
        """The ``environment_factory`` TRL calls for each new instance."""
        return lambda: cls(specs, config)

    def reset(self, task: str | None = None, seed: int = 0, **kwargs: Any) -> str:
        """Start an episode of ``task`` (default: the tasks in turn by seed) from ``seed``; other fields of the
        dataset row (``prompt``...) are ignored. Returns the goal and the page, appended to the prompt."""
        if task is not None and task not in self._specs:
            raise ValueError(f"no task {task!r} in this environment (tasks: {', '.join(self._default)})")
        task = task or self._default[int(seed) % len(self._default)]
        if self._env is None or task != self._task:
            self._close()
            self._env, self._task = make_env(self._specs[task], self._config), task
        obs, _ = self._env.reset(seed=int(seed))
        self.ret, self.success, self.ended, self.steps, self.truncation_reason = 0.0, False, False, 0, None
        self.milestones = []
        return f"\n\nGoal: {obs['goal']}\n\n{obs['text']}"

    def _act(self, name: str, *args: str) -> str:
        if self._env is None:
            raise RuntimeError("reset() before a tool call")
        if self.ended:
            return "The episode has ended; no more actions are taken."
        try:
            text = format_action(name, *args)
        except ValueError:  # e.g. not an element id: the env's own error observation for the raw call
            text = f"{name}({', '.join(args)})"
        obs, reward, terminated, truncated, info = self._env.step(text)
        self.steps += 1
        self.ret += float(reward)
        self.success = bool(info["success"])
        self.milestones += [m.id for m in info["milestones"]]
        self.ended = bool(terminated or truncated)
        if truncated:
            self.truncation_reason = info.get("truncation_reason")
        error = info.get("action_error")
        return (f"ERROR: {error}\n" if error else "") + obs["text"]

    # ---- the tools: the action language's verbs (docstrings: the tool schema TRL shows the model)
    def click(self, element: str) -> str:
        """Click an element of the page.

        Args:
            element: The element's id from the page text, e.g. e12.
        """
        return self._act("click", element)

    def fill(self, element: str, text: str) -> str:
        """Type text into a text field, replacing what it holds.

        Args:
            element: The text field's id from the page text, e.g. e5.
            text: The text to type.
        """
        return self._act("fill", element, text)

    def click_at(self, x: int, y: int) -> str:
        """Click at a point of the page, e.g. on a shape of a drawing that has no element id.

        Args:
            x: Pixels from the left edge of the visible page.
            y: Pixels from the top edge of the visible page.
        """
        return self._act("click", str(x), str(y))

    def hover(self, element: str) -> str:
        """Move the mouse pointer onto an element (e.g. to open a menu that shows on hover).

        Args:
            element: The element's id from the page text, e.g. e12.
        """
        return self._act("hover", element)

    def hover_at(self, x: int, y: int) -> str:
        """Move the mouse pointer to a point of the page.

        Args:
            x: Pixels from the left edge of the visible page.
            y: Pixels from the top edge of the visible page.
        """
        return self._act("hover", str(x), str(y))

    def drag(self, source: str, target: str) -> str:
        """Drag an element onto another one with the mouse (press, move, release).

        Args:
            source: The id of the element to drag, e.g. e3.
            target: The id of the element to drop it on, e.g. e7.
        """
        return self._act("drag", source, target)

    def drag_points(self, points: list[int]) -> str:
        """Press the mouse at a point, move it through the next points and release it at the last one (drag
        between points, or draw a line or a shape).

        Args:
            points: The points' pixel coordinates in the visible page, x and y in turn: [x1, y1, x2, y2, ...],
                2 to 16 points.
        """
        return self._act("drag", *(str(v) for v in points))

    def select(self, element: str, option: str) -> str:
        """Choose an option of a drop-down list.

        Args:
            element: The list's id from the page text.
            option: The option's label.
        """
        return self._act("select", element, option)

    def press(self, key: str) -> str:
        """Press a key, e.g. Enter, Tab or Escape.

        Args:
            key: The key's name.
        """
        return self._act("press", key)

    def scroll(self, direction: str) -> str:
        """Scroll the page.

        Args:
            direction: up, down, left or right.
        """
        return self._act("scroll", direction)

    def goto(self, url: str) -> str:
        """Open a URL of the site.

        Args:
            url: The URL or path to open.
        """
        return self._act("goto", url)

    def back(self) -> str:
        """Go back to the previous page."""
        return self._act("back")

    def upload(self, element: str, file: str) -> str:
        """Upload a file through a file input.

        Args:
            element: The file input's id from the page text.
            file: The file's name.
        """
        return self._act("upload", element, file)

    def done(self, answer: str) -> str:
        """Finish the task, with the answer when the task asks a question (else an empty string).

        Args:
            answer: The answer, or an empty string.
        """
        return self._act("done", answer)

    @property
    def infra_failure(self) -> bool:
        """Whether the episode was cut short by the infrastructure (not by the step limit)."""
        return self.truncation_reason is not None and self.truncation_reason != MAX_STEPS_REASON

    def _close(self) -> None:  # private: every public method is a tool for TRL
        if self._env is not None:
            self._env.close()
            self._env = None


def milestone_reward(environments: Sequence[AgentrlToolEnv], **kwargs: Any) -> list[float | None]:
    """TRL reward function: each rollout's return (the milestone rewards it earned); None when the
    infrastructure cut the episode short (TRL ignores a None)."""
    return [None if e.infra_failure else e.ret for e in environments]


def success_reward(environments: Sequence[AgentrlToolEnv], **kwargs: Any) -> list[float | None]:
    """TRL reward function: 1.0 when the rollout completed the task's success milestones, else 0.0."""
    return [None if e.infra_failure else float(e.success) for e in environments]


def tasks_dataset(specs: Sequence[TaskSpec], seeds: Sequence[int], prompt: str = "Complete the task on the web page. "
                  "Use the tools; element ids are in the page text.") -> Any:
    """A `datasets.Dataset` of (prompt, task, seed) rows, one per task x seed, for `GRPOTrainer`."""
    from datasets import Dataset

    rows = [{"prompt": [{"role": "user", "content": prompt}], "task": s.id, "seed": int(seed)}
            for s in specs for seed in seeds]
    return Dataset.from_list(rows)
