"""Preference data: automatic pairs from real rule-labelled trajectories, the SQLite store, the labelling page
in real Chromium (a click stores a row), and the `agentrl rm` CLI on those pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.envs.host import CHROME_ARGS, CHROMIUM
from agentrl.rewards.prefs import PrefStore, auto_pairs, read_episodes
from conftest import REPO
from typer.testing import CliRunner

from agentrl.collect import collect
from agentrl.labelling import LabelServer
from agentrl.taskspec import load_task


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # torch's intra-op threads spin against each other on a small shared machine; one is plenty here
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reports-open, seed 0: the scripted agent and both near-misses, with screenshots."""
    out = tmp_path_factory.mktemp("prefs-run")
    collect([load_task(REPO / "tasks/core/reports-open.yaml")], [0], out, random_episodes=0,
            screenshot=True, progress=False)
    return out


def test_auto_pairs_prefer_the_higher_rule_return(run_dir: Path, tmp_path: Path) -> None:
    episodes = read_episodes([run_dir])
    returns = {e.dir.name: e.return_ for e in episodes}
    pairs = auto_pairs([run_dir])
    traj = [p for p in pairs if p.level == "trajectory"]
    steps = [p for p in pairs if p.level == "step"]
    assert traj and steps
    for p in traj:
        won, lost = p.meta["episodes"]
        assert returns[won] > returns[lost] and p.meta["returns"] == [returns[won], returns[lost]]
    scripted = max(episodes, key=lambda e: e.return_)
    assert scripted.return_ == pytest.approx(0.3)  # report page + heading
    assert any(p.chosen == scripted.text() for p in traj)
    # the texts name targets by role and name, not by page-specific refs, and carry no sandbox port
    assert 'click link "' in scripted.text() and "[ref=" not in scripted.text() and "127.0.0.1" not in scripted.text()
    for p in steps:  # same state (first step of the same variant): one earned weight, one did not
        assert p.meta["t"] == 1 and p.chosen != p.rejected

    store = PrefStore(tmp_path / "prefs.sqlite")
    assert store.add_many(pairs) == len(pairs)
    assert store.add_many(pairs) == 0  # the same auto pairs are stored once
    assert store.pairs(tasks="reports-*") == store.pairs() and store.pairs(tasks="accounts-*") == []
    assert store.count() == {"trajectory/auto": len(traj), "step/auto": len(steps)}


def test_label_page_in_chromium_stores_the_click(run_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = PrefStore(tmp_path / "prefs.sqlite")
    server = LabelServer([run_dir], store, labeller="tester").start()
    try:
        assert len(server.items) >= 2
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
            page = browser.new_page()
            page.goto(server.url)
            left, right = server.items[0]
            assert page.get_by_role("heading", level=1).inner_text() == f"Goal: {left.goal}"
            shots = page.locator("img")
            assert shots.count() >= 2 and all(shots.nth(i).evaluate("i => i.naturalWidth") > 0 for i in range(shots.count()))
            page.get_by_role("button", name="Left better").click()
            page.wait_for_url("**/compare/1")
            page.get_by_role("button", name="Tie").click()
            page.wait_for_url("**/compare/*")
            browser.close()
    finally:
        server.stop()
    rows = store.pairs(source="human")
    assert len(rows) == 2
    first, second = rows
    assert (first.chosen, first.rejected, first.tie) == (left.text(), right.text(), False)
    assert first.labeller == "tester" and first.meta["choice"] == "left" and first.task_id == "reports-open"
    assert second.tie and second.meta["choice"] == "tie"
    # a restarted server skips what this labeller already did
    assert LabelServer([run_dir], store, labeller="tester").done == {0, 1}


def test_rm_cli_prefs_train_eval(run_dir: Path, tmp_path: Path) -> None:
    import json

    from agentrl.rewards.reward_model import resolve_encoder
    from transformers import AutoTokenizer, BertConfig, BertModel

    from agentrl.cli.rewards import rm_app

    enc = tmp_path / "enc"
    tok = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(enc)
    tok.save_pretrained(enc)
    runner, store, model = CliRunner(), tmp_path / "p.sqlite", tmp_path / "rm"
    r = runner.invoke(rm_app, ["prefs", str(run_dir), "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert "reports-open" in r.output and "new pairs" in r.output
    r = runner.invoke(rm_app, ["train", "--prefs", str(store), "--out", str(model), "--encoder", str(enc),
                               "--epochs", "50", "--heads", "2"])
    assert r.exit_code == 0, r.output
    assert (model / "config.json").is_file() and (model / "heads.pt").is_file()
    r = runner.invoke(rm_app, ["eval", str(model), "--prefs", str(store), "--tasks", "reports-*"])
    assert r.exit_code == 0, r.output
    report = json.loads((model / "eval.json").read_text())
    assert report["pairs"] > 0 and 0.0 <= report["accuracy"] <= 1.0 and "pairwise accuracy" in r.output
    r = runner.invoke(rm_app, ["eval", str(model), "--prefs", str(store), "--tasks", "nothing-*"])
    assert r.exit_code == 2 and "no pairs" in r.output
