"""TRL's `environment_factory`: agentrl's action verbs as named tools, the milestone reward as TRL reward
functions; TRL's own `GRPOTrainer` runs steps on an agentrl task with a tiny model built from a config."""

from __future__ import annotations

from pathlib import Path

import pytest

trl = pytest.importorskip("trl")
pytest.importorskip("datasets")

import torch  # noqa: E402
from agentrl.envs.actions import parse_action  # noqa: E402
from transformers.utils import get_json_schema  # noqa: E402

from agentrl.agents.scripted import ScriptedAgent  # noqa: E402
from agentrl.learner.trainer import load_tasks  # noqa: E402
from agentrl.trl_env import AgentrlToolEnv, milestone_reward, success_reward, tasks_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK = str(REPO / "tasks/train/click-named-button.yaml")


def _oracle_tool_calls(env: AgentrlToolEnv, task: str, seed: int) -> None:
    """Play the task's oracle through the named tools (what a model's tool calls do)."""
    env.reset(task=task, seed=seed)
    agent = ScriptedAgent()
    agent.reset(env._env._last_obs, {}, env._env.variant)
    while not env.ended:
        a = parse_action(agent.act(env._env._last_obs))
        getattr(env, a.name)(*a.args)


def test_trl_tools_are_the_action_verbs_and_the_rewards_read_the_milestones() -> None:
    specs = load_tasks([TASK])
    env = AgentrlToolEnv(specs)
    try:
        schema = get_json_schema(env.fill)["function"]
        assert schema["name"] == "fill" and set(schema["parameters"]["properties"]) == {"element", "text"}
        assert get_json_schema(env.click)["function"]["parameters"]["required"] == ["element"]
        pointer = {name: get_json_schema(getattr(env, name))["function"]["parameters"]
                   for name in ("click_at", "hover", "hover_at", "drag", "drag_points")}
        assert pointer["click_at"]["required"] == ["x", "y"] and pointer["click_at"]["properties"]["x"]["type"] == "integer"
        assert pointer["drag"]["required"] == ["source", "target"] and pointer["hover"]["required"] == ["element"]
        assert pointer["drag_points"]["properties"]["points"] == {
            "type": "array", "items": {"type": "integer"}, "description": pointer["drag_points"]["properties"]["points"]["description"]}
        first = env.reset(task=specs[0].id, seed=0)
        assert "Goal: Click the" in first and "button" in first
        _oracle_tool_calls(env, specs[0].id, 0)
        assert env.success and env.milestones and milestone_reward([env]) == [pytest.approx(1.0)]
        assert success_reward([env]) == [1.0]
        assert env.click("e1").startswith("The episode has ended")
        env.reset(task=specs[0].id, seed=1)  # a bad element id: the env's error observation, no reward
        out = env.click("nothing")
        assert out.startswith("ERROR: click(): 'nothing' is not an element id") and env.steps == 1
        assert milestone_reward([env]) == [0.0] and success_reward([env]) == [0.0]
    finally:
        env._close()


def test_trl_pointer_tools_reach_the_pointer_verbs() -> None:
    """An off-viewport point and a one-point path are the env's error observations; points on the page act."""
    from agentrl.envs.browser import BrowserEnvConfig

    specs = load_tasks([TASK])
    env = AgentrlToolEnv(specs, BrowserEnvConfig(record=False, keep_episode_dirs=False, max_steps=6))
    try:
        env.reset(task=specs[0].id, seed=2)
        assert env.click_at(5000, 10).startswith("ERROR: click(5000, 10): the point (5000, 10) is outside the viewport")
        assert env.drag_points([10, 10]).startswith("ERROR: drag(): '10' is not an element id (ids look like e12); drag(from, to) takes each end")
        assert not env.hover_at(5, 5).startswith("ERROR") and not env.drag_points([5, 5, 40, 5, 40, 30]).startswith("ERROR")
        assert not env.click_at(5, 5).startswith("ERROR") and env.steps == 5 and not env.success
    finally:
        env._close()


def _tiny_tool_model(tmp: Path):
    """A tiny Llama from a config and agentrl's trained BPE, with TRL's Qwen3 chat template (tool calls)."""
    from importlib.resources import files

    from transformers import LlamaConfig, LlamaForCausalLM

    from agentrl.policy.tokenizer import train_tokenizer

    tok = train_tokenizer(vocab_size=1024)
    tok.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>", "<tool_response>",
                                                          "</tool_response>", "<think>", "</think>"]})
    tok.chat_template = (files("trl") / "chat_templates" / "qwen3.jinja").read_text()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    return LlamaForCausalLM(cfg), tok


def test_trl_grpo_trainer_runs_steps_on_an_agentrl_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(2)
    specs = load_tasks([TASK])
    model, tok = _tiny_tool_model(tmp_path)
    made: list[AgentrlToolEnv] = []

    def factory() -> AgentrlToolEnv:
        made.append(AgentrlToolEnv(specs))
        return made[-1]

    args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=16, max_tool_calling_iterations=2, learning_rate=1e-3, logging_steps=1,
                      report_to=[], use_cpu=True, save_strategy="no", temperature=1.0, seed=0)
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=[milestone_reward, success_reward],
                          train_dataset=tasks_dataset(specs, range(4)), environment_factory=factory, args=args)
    try:
        trainer.train()
    finally:
        for e in made:
            e._close()
    logs = [x for x in trainer.state.log_history if "loss" in x]
    assert trainer.state.global_step == 2 and len(logs) == 2
    assert all("rewards/milestone_reward/mean" in x for x in logs), logs[0].keys()
    assert len(made) >= 2 and all(e._task == specs[0].id for e in made)  # TRL reset every instance on the task
    # TRL's logged reward is the mean of the last batch's episode returns (the milestone rewards)
    assert logs[-1]["rewards/milestone_reward/mean"] == pytest.approx(sum(e.ret for e in made[:2]) / 2)
