"""The email/documents, settings and search categories of the `web` suite (apps mail, docs, settings, kb):
the oracle solves every task and fires every milestone in a stable order, every near-miss misses the goal,
a no-op fires nothing, the random agent stays low per category, and shortcuts straight at the server
(a hand-made POST, a GET of a POST-only URL, the success page typed in) record nothing."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from agentrl.envs.browser import BrowserEnv, BrowserEnvConfig
from agentrl.sandbox.apps.docs import DocsApp
from agentrl.sandbox.apps.kb import PER_PAGE, KbApp, search
from agentrl.sandbox.apps.mail import MailApp
from agentrl.sandbox.apps.settings import SettingsApp
from agentrl.sandbox.server import EPISODE_HEADER
from agentrl.suites import SUITES_DIR

from agentrl.agents import RandomAgent
from agentrl.evaluate import run_episode
from agentrl.suite import load_suite_spec
from agentrl.testing import check_near_miss, check_noop, check_oracle

SUITE = load_suite_spec(SUITES_DIR / "web")
CATEGORIES = ("email", "settings", "search")
TASKS = [t for t in SUITE.tasks if SUITE.category(t) in CATEGORIES]
# Seeds per task for the oracle: the first AGENTRL_SUITE_SEEDS (default 1, to keep CI short) of [0, 1];
# `agentrl tasks coverage tasks/web --seeds 5` (docs/coverage.md) is the 5-seed run.
SEEDS = [0, 1][: int(os.environ.get("AGENTRL_SUITE_SEEDS", "1"))]


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("web-b")
    made = {t.id: BrowserEnv(t, BrowserEnvConfig(root_dir=root)) for t in TASKS}
    yield made
    for e in made.values():
        e.close()


def test_each_category_has_eight_mixed_tasks_with_near_misses_and_heldout() -> None:
    for cat in CATEGORIES:
        tasks = [t for t in TASKS if SUITE.category(t) == cat]
        assert len(tasks) >= 8, cat
        assert {t.tier for t in tasks} == {1, 2, 3}, cat
        assert all(t.near_misses for t in tasks), [t.id for t in tasks if not t.near_misses]
        assert 1 <= sum("heldout" in t.tags for t in tasks) <= 2, cat
        assert all(t.variables or "{{" in t.instruction for t in tasks), cat
        train, _ = SUITE.split("train")
        assert not {t.id for t in train} & {t.id for t in tasks if "heldout" in t.tags}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_oracle_solves_and_fires_every_milestone_in_order(envs, task) -> None:
    # the first seed again (the same trajectory) on every fourth task: determinism is a property of the env,
    # checked on every core task and drill; this samples the web apps without doubling CI time
    again = [SEEDS[0]] if TASKS.index(task) % 4 == 0 else []
    check_oracle(envs[task.id], [*SEEDS, *again])


NEAR_MISSES = [(t, n) for t in TASKS for n in t.near_misses]


@pytest.mark.parametrize("task, near", NEAR_MISSES, ids=[f"{t.id}:{n.name}" for t, n in NEAR_MISSES])
def test_near_miss_does_not_earn_the_goal(envs, task, near) -> None:
    check_near_miss(envs[task.id], near, seed=2)  # a seed the oracle test does not use


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_noop_fires_nothing(envs, task) -> None:
    check_noop(envs[task.id], 0, ("wait()", 'done("")'))  # two steps: the shortest tasks allow only two


@pytest.mark.parametrize("category", CATEGORIES)
def test_random_agent_stays_low_per_category(envs, category) -> None:
    tasks = [t for t in TASKS if SUITE.category(t) == category]
    wins = [run_episode(envs[t.id], RandomAgent(seed=7), 3).success for t in tasks]
    assert sum(wins) / len(wins) <= 0.15, f"random agent solved {sum(wins)}/{len(wins)} {category} tasks"


# ---------------------------------------------------------------- shortcuts straight at the server
def _request(env: BrowserEnv, method: str, path: str, form: dict[str, str] | None = None) -> int:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(env.sandbox.url(path), data=data, method=method,
                                 headers={EPISODE_HEADER: env.episode_id})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 303 after a POST is the answer we want to see
        return None


def _state(env: BrowserEnv, app: str) -> dict:
    return env.sandbox.episode_state(env.episode_id)[app]


def test_settings_posts_with_wrong_or_empty_fields_change_nothing(envs) -> None:
    env = envs["set-language"]
    env.reset(seed=4)
    target, before = env.variant.variables["target_language"], dict(_state(env, "settings")["values"])
    assert _request(env, "POST", "/settings/save", {"tab": "general"}) == 200  # every select empty: rejected
    assert _request(env, "POST", "/settings/save", {"tab": "general", "language": "Klingon",
                                                    "timezone": "UTC", "date_format": "YYYY-MM-DD"}) == 200
    assert _request(env, "POST", "/settings/save", {"tab": "nowhere", "language": target}) == 200
    assert _request(env, "GET", "/settings/save") == 405
    s = _state(env, "settings")
    assert s["values"] == before and s["saves"] == 0 and s["validation_failures"] == 3
    obs, reward, *_ , info = env.step('goto("/settings/?tab=general")')
    assert "Changes saved." not in obs["text"] and not info["success"]
    # the same POST with a valid value is what the Save button sends: it is recorded, and only then
    assert _request(env, "POST", "/settings/save", {"tab": "general", "language": target,
                                                    "timezone": before["timezone"],
                                                    "date_format": before["date_format"]}) == 303
    assert _state(env, "settings")["values"]["language"] == target


def test_mail_send_validates_on_the_server_and_get_sends_nothing(envs) -> None:
    env = envs["mail-send"]
    env.reset(seed=4)
    facts = env.sandbox.episode_facts(env.episode_id)["mail"]
    assert _request(env, "GET", "/mail/send") == 405
    assert _request(env, "POST", "/mail/send", {"to": "", "subject": "x"}) == 200
    assert _request(env, "POST", "/mail/send", {"to": facts["contact_name"], "subject": "x"}) == 200
    assert _request(env, "POST", "/mail/send", {"to": facts["contact_email"], "subject": ""}) == 200
    s = _state(env, "mail")
    assert s["sent"] == [] and s["rejected_sends"] == 3
    obs, reward, terminated, truncated, info = env.step('goto("/mail/sent")')
    assert "Message sent." not in obs["text"] and info["milestones"] == []


def test_kb_feedback_and_docs_save_need_a_post(envs) -> None:
    env = envs["search-compare"]
    env.reset(seed=4)
    facts = env.sandbox.episode_facts(env.episode_id)
    assert _request(env, "GET", f"/kb/articles/{facts['kb']['larger_article_id']}/feedback?helpful=yes") == 405
    assert _request(env, "POST", f"/kb/articles/{facts['kb']['larger_article_id']}/feedback", {"helpful": "maybe"}) == 303
    assert _state(env, "kb")["feedback"] == {}
    assert _request(env, "GET", f"/docs/{facts['docs']['doc_id']}/save?title=x") == 405
    assert _request(env, "POST", f"/docs/{facts['docs']['doc_id']}/save", {"title": "  "}) == 200
    docs = _state(env, "docs")
    assert docs["saves"] == 0 and docs["rejected_saves"] == 1
    assert docs["documents"][facts["docs"]["doc_id"]]["title"] == facts["docs"]["doc_title"]


# ---------------------------------------------------------------- seeded data (no browser)
@pytest.mark.parametrize("app", [MailApp(), DocsApp(), SettingsApp(), KbApp()], ids=lambda a: a.name)
def test_apps_are_deterministic_and_vary_with_the_seed(app) -> None:
    assert app.facts(app.new_state(11)) == app.facts(app.new_state(11))
    assert len({tuple(sorted(app.facts(app.new_state(s)).items())) for s in range(20)}) >= 15


def test_targets_never_equal_the_current_value_the_default_or_the_look_alike() -> None:
    settings, kb, mail = SettingsApp(), KbApp(), MailApp()
    for seed in range(200):
        st = settings.new_state(seed)
        f = settings.facts(st)
        for key in ("language", "timezone", "date_format", "digest_day", "visibility"):
            assert f[f"target_{key}"] not in (f[key], st.defaults[key]), (seed, key)
        assert st.values[f["off_switch_key"]] is False and st.defaults[f["off_switch_key"]] is False
        assert st.values[f["on_switch_key"]] is True and st.defaults[f["on_switch_key"]] is True
        k = kb.facts(ks := kb.new_state(seed))
        assert k["topic"] == k["decoy_topic"] and k["value"] != k["decoy_value"]
        assert k["paged_article_id"] in [a.id for a in search(ks.articles, k["paged_query"], "", "")[PER_PAGE:]]
        assert k["second_article_id"] in [a.id for a in search(ks.articles, "", k["second_category"], "")[:PER_PAGE]]
        m = mail.facts(mail.new_state(seed))
        assert m["contact_email"] != m["lookalike_email"] and m["code"] != m["decoy_code"]
