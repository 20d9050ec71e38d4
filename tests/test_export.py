"""`agentrl export`: a run dir's episodes as Parquet / a Hugging Face dataset folder that `datasets` loads,
and that the offline paths (SFT's replayed demonstrations, `agentrl rm prefs`) take in place of the run dir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agentrl.envs.browser import BrowserEnvConfig

from agentrl.evaluate import evaluate
from agentrl.learner.trainer import load_tasks
from agentrl.trajectory import load_results

datasets = pytest.importorskip("datasets")
pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[1]
TASK = str(REPO / "tasks/train/click-named-button.yaml")
CLI = [sys.executable, "-m", "agentrl.cli"]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The oracle (with screenshots) and the random agent on 3 seeds of one task."""
    root = tmp_path_factory.mktemp("runs")
    specs = load_tasks([TASK])
    evaluate(specs, "scripted", [0, 1, 2], root / "oracle", progress=False, report=False,
             config=BrowserEnvConfig(screenshot=True))
    evaluate(specs, "random", [0, 1, 2], root / "random", progress=False, report=False, config=BrowserEnvConfig(max_steps=2))
    return root


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "export", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_export_parquet_per_step_loads_with_datasets_and_matches_the_run(run_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.parquet"
    p = _export(str(run_root), "--out", str(out), "--images", "bytes")
    assert p.returncode == 0, p.stderr
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    results = [(f"{run}/{r.episode_dir}", r) for run in ("oracle", "random") for r in load_results(run_root / run)]
    assert len(ds) == sum(r.steps for _, r in results) and len(set(ds["episode_id"])) == len(results)
    for eid, r in results:  # every episode's rewards and milestones, as the evaluator recorded them
        rows = sorted((x for x in ds if x["episode_id"] == eid), key=lambda x: x["t"])
        assert [x["reward"] for x in rows] == r.rewards and [x["action"] for x in rows] == r.actions
        assert [m for x in rows for m in x["milestones"]] == r.milestones
        assert all(x["goal"] and x["task_id"] == r.task_id and x["seed"] == r.seed for x in rows)
        assert rows[0]["prev_observation"] is None and all(a["observation"] == b["prev_observation"]
                                                            for a, b in zip(rows, rows[1:], strict=False))
    shots = [x for x in ds if x["screenshot"]]
    assert shots, "the oracle's run has screenshots"
    for x in shots:
        assert x["screenshot_png"] == (run_root / x["screenshot"]).read_bytes()
        assert x["screenshot_png"][:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(x["milestone_events"]) for x in ds if x["milestones"]]
    assert events and all(e[0]["weight"] > 0 and e[0]["evidence"] for e in events)


def test_export_hf_folder_per_episode_loads_with_load_dataset(run_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    p = _export(str(run_root / "oracle"), "--out", str(out), "--format", "hf", "--per", "episode")
    assert p.returncode == 0, p.stderr
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    results = {r.episode_dir: r for r in load_results(run_root / "oracle")}
    assert len(ds) == len(results) == 3
    for x in ds:
        r = results[x["episode_id"]]
        assert x["return"] == pytest.approx(r.return_) and x["success"] == r.success and x["success"]
        assert x["milestones"] == r.milestones and x["actions"] == r.actions and x["rewards"] == r.rewards
        assert len(x["screenshots"]) == len(x["actions"]) and all(x["screenshots"])


def test_export_rejects_bad_options_and_missing_runs_with_a_clear_error(run_root: Path, tmp_path: Path) -> None:
    p = _export(str(run_root), "--per", "turn", "--out", str(tmp_path / "x.parquet"))
    assert p.returncode == 2 and "per must be one of" in p.stderr
    p = _export(str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "no run directory" in p.stderr


def test_export_feeds_sft_demonstrations_and_rm_prefs(run_root: Path, tmp_path: Path) -> None:
    """Both granularities read back as the same replay jobs as the run dir (what `agentrl sft`'s demo_runs
    replays through the real env), and `rm prefs` makes the same pairs from the export as from the run dir."""
    from agentrl.rewards.prefs import PrefStore, auto_pairs

    from agentrl.dataset import read_export
    from agentrl.learner.demos import read_recorded, replay_episodes
    from agentrl.learner.trainer import load_tasks
    from agentrl.policy.model import build_tiny_policy

    steps, eps = tmp_path / "s.parquet", tmp_path / "e"
    assert _export(str(run_root), "--out", str(steps)).returncode == 0
    assert _export(str(run_root), "--out", str(eps), "--format", "hf", "--per", "episode").returncode == 0
    want = sorted((j.task_id, j.seed, j.actions, j.ret) for j in read_recorded([run_root]))
    for exp in (steps, eps):
        assert sorted((j.task_id, j.seed, j.actions, j.ret) for j in read_recorded([exp])) == want
    a = [(e[1][i].model_dump(), e[0]["task_id"]) for e in read_export(steps) for i in range(len(e[1]))]
    b = [(e[1][i].model_dump(), e[0]["task_id"]) for e in read_export(eps) for i in range(len(e[1]))]
    assert sorted(map(str, a)) == sorted(map(str, b))  # the two granularities hold the same steps

    from agentrl.learner.config import SHORT_SYSTEM_PROMPT, TrainConfig

    _, tok = build_tiny_policy(tmp_path / "tiny", seed=0)
    cfg = TrainConfig(tasks=[TASK], click_roles=("button", "link", "heading"), described_actions=True,
                      system_prompt=SHORT_SYSTEM_PROMPT, num_envs=3)
    got, stats = replay_episodes(cfg, tok, load_tasks([TASK]), read_recorded([steps]))
    assert stats.used == 3 and stats.diverged == 0 and all(t.success for t in got)

    key = sorted((p.task_id, p.level, p.chosen, p.rejected) for p in auto_pairs([run_root]))
    assert key and sorted((p.task_id, p.level, p.chosen, p.rejected) for p in auto_pairs([eps])) == key
    store = tmp_path / "prefs.sqlite"
    p = subprocess.run([*CLI, "rm", "prefs", str(steps), "--store", str(store)], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert sum(PrefStore(store).count().values()) == len(key)
