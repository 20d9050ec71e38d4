"""suite.yaml: splits select tasks by id glob, tag or category over a seed range; mistakes name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrl.suites import SUITES_DIR
from conftest import write_task

from agentrl.suite import load_suite_spec
from agentrl.yamlpos import TaskFileError

GOAL = [{"id": "g", "detector": "url_matches", "params": {"pattern": "/x$"}, "category": "goal"}]


def _suite(tmp_path: Path, meta: str) -> Path:
    for cat, tid, tags in [("forms", "form-a", []), ("forms", "form-b", ["heldout"]), ("search", "search-a", [])]:
        (tmp_path / cat).mkdir(exist_ok=True)
        write_task(tmp_path / cat, GOAL, task_id=tid, tags=tags)
    (tmp_path / "suite.yaml").write_text(meta)
    return tmp_path


def test_splits_by_tag_category_and_seed_range(tmp_path: Path) -> None:
    s = load_suite_spec(_suite(tmp_path, (
        "name: mini\ncategories: [forms, search]\nsplits:\n"
        "  train: {exclude: ['tag:heldout'], seeds: [0, 1000]}\n"
        "  test: {seeds: [1000, 1003]}\n"
        "  forms: {tasks: ['category:forms'], seeds: [5, 7]}\n"
        "  globbed: {tasks: ['search-*']}\n"
    )))
    assert s.name == "mini"
    tasks, seeds = s.split("train", n_seeds=4)
    assert [t.id for t in tasks] == ["form-a", "search-a"] and seeds == [0, 1, 2, 3]
    tasks, seeds = s.split("test")
    assert len(tasks) == 3 and seeds == [1000, 1001, 1002]
    assert [t.id for t in s.split("forms")[0]] == ["form-a", "form-b"] and s.split("forms")[1] == [5, 6]
    assert [t.id for t in s.split("globbed")[0]] == ["search-a"] and s.split("globbed")[1] == [0, 1, 2, 3, 4]
    assert {t.id: s.category(t) for t in s.tasks} == {"form-a": "forms", "form-b": "forms", "search-a": "search"}
    with pytest.raises(KeyError, match="did you mean 'test'"):
        s.split("tset")


def test_train_and_test_seeds_never_overlap_in_the_bundled_web_suite() -> None:
    meta = (SUITES_DIR / "web" / "suite.yaml").read_text()
    assert "heldout" in meta
    import yaml
    splits = yaml.safe_load(meta)["splits"]
    train, test = splits["train"]["seeds"], splits["test"]["seeds"]
    assert train[1] <= test[0] or test[1] <= train[0]


@pytest.mark.parametrize("meta, where", [
    ("splits:\n  train: {seeds: [5, 5]}\n", r"suite\.yaml:2: splits\.train: .*stop > start"),
    ("splits:\n  train:\n    tasks: [nothing-*]\n", r"suite\.yaml:3: splits\.train\.tasks\[0\]: 'nothing-\*' matches no task"),
    ("splits:\n  train: {tasks: ['*'], seed: [0, 1]}\n", r"suite\.yaml:2: splits\.train\.seed"),
    ("categories: [forms]\n", r"search-a\.yaml:1: category: 'search' is not one of the suite's categories"),
])
def test_mistakes_name_file_line_and_field(tmp_path: Path, meta: str, where: str) -> None:
    with pytest.raises(TaskFileError, match=where):
        load_suite_spec(_suite(tmp_path, meta))


def test_a_folder_without_suite_yaml_has_one_split_all() -> None:
    s = load_suite_spec(SUITES_DIR / "core")
    tasks, seeds = s.split("all")
    assert len(tasks) == 6 and seeds == [0, 1, 2, 3, 4]
