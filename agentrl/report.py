"""``report.html``: one static, self-contained page for an evaluation run dir (no server, no network).

    write_report(Path("runs/eval"))        # -> runs/eval/report.html (also done by `agentrl evaluate`)

Sections: a header (agent, suite, split, overall success with its 95% interval), a table per task, plots
as inline SVG (success by category with interval whiskers, the return distribution, a milestone funnel per
task) and a trajectory viewer: pick an episode and step through it (buttons, slider or the arrow keys)
seeing each step's screenshot, action, reward and its audit, the milestones it completed with their
evidence, and the observation text. Screenshots stay files in the run dir, linked by relative path; the
viewer's data is embedded as JSON and bounded (observation text cut at `OBS_CHARS`, at most
`MAX_EPISODES` episodes, sampled evenly across tasks, with a note saying so).
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from agentrl.trajectory import load_results, read_trajectory
from agentrl.types import EpisodeResult

OBS_CHARS = 4000
MAX_EPISODES = 300
MAX_STEPS = 200
_TEMPLATE = "report.html"


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---------------------------------------------------------------- inline SVG plots
def svg_bars_ci(labels: list[str], values: list[float], cis: list[tuple[float, float]], *, title: str) -> str:
    """Vertical bars in [0, 1] with interval whiskers."""
    w_bar, gap, h, left, bottom, top = 56, 22, 220, 44, 70, 38
    width = max(260, left + len(labels) * (w_bar + gap) + gap)
    y = lambda v: top + h * (1 - v)  # noqa: E731
    out = [f'<svg class="plot" viewBox="0 0 {width} {top + h + bottom}" width="{width}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{left}" y="16" class="ptitle">{_esc(title)}</text>']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" x2="{width}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{int(v * 100)}%</text>')
    for i, (lab, v, (lo, hi)) in enumerate(zip(labels, values, cis, strict=True)):
        x = left + gap + i * (w_bar + gap)
        cx = x + w_bar / 2
        out.append(f'<rect x="{x}" y="{y(v):.1f}" width="{w_bar}" height="{h * v:.1f}" class="bar"><title>{_esc(lab)}: '
                   f'{_pct(v)} (95% CI {_pct(lo)}–{_pct(hi)})</title></rect>')
        out.append(f'<path d="M{cx},{y(lo):.1f}V{y(hi):.1f}M{cx - 8},{y(lo):.1f}h16M{cx - 8},{y(hi):.1f}h16" class="whisker"/>')
        out.append(f'<text x="{cx}" y="{y(hi) - 5:.1f}" class="val" text-anchor="middle">{_pct(v)}</text>')
        out.append(f'<text x="{cx}" y="{top + h + 16}" class="tick" text-anchor="end" '
                   f'transform="rotate(-30 {cx} {top + h + 16})">{_esc(lab)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_histogram(success: list[float], failure: list[float], *, title: str, bins: int = 12) -> str:
    """Histogram of returns, stacked: successful episodes and the others."""
    values = success + failure
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    step = (hi - lo) / bins
    count = lambda vs: [sum(1 for v in vs if min(int((v - lo) / step), bins - 1) == b) for b in range(bins)]  # noqa: E731
    cs, cf = count(success), count(failure)
    peak = max([a + b for a, b in zip(cs, cf, strict=True)] + [1])
    w, h, left, top, bottom = 26, 200, 40, 26, 44
    width = left + bins * w + 20
    out = [f'<svg class="plot" viewBox="0 0 {width} {top + h + bottom}" width="{width}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{left}" y="16" class="ptitle">{_esc(title)}</text>']
    for b in range(bins):
        x = left + b * w
        hs, hf = h * cs[b] / peak, h * cf[b] / peak
        edge = f"{lo + b * step:.2f}–{lo + (b + 1) * step:.2f}"
        out.append(f'<rect x="{x + 1}" y="{top + h - hf:.1f}" width="{w - 2}" height="{hf:.1f}" class="bar fail">'
                   f"<title>return {edge}: {cf[b]} not solved</title></rect>")
        out.append(f'<rect x="{x + 1}" y="{top + h - hf - hs:.1f}" width="{w - 2}" height="{hs:.1f}" class="bar ok">'
                   f"<title>return {edge}: {cs[b]} solved</title></rect>")
    out.append(f'<line x1="{left}" x2="{left + bins * w}" y1="{top + h}" y2="{top + h}" class="axis"/>')
    for b in range(0, bins + 1, max(1, bins // 4)):
        out.append(f'<text x="{left + b * w}" y="{top + h + 16}" class="tick" text-anchor="middle">{lo + b * step:.2f}</text>')
    out.append(f'<text x="{left - 6}" y="{top + 4}" class="tick" text-anchor="end">{peak}</text>'
               f'<text x="{left - 6}" y="{top + h}" class="tick" text-anchor="end">0</text>'
               f'<text x="{left + bins * w / 2}" y="{top + h + 34}" class="tick" text-anchor="middle">episode return '
               f'(<tspan class="okt">■ solved</tspan> <tspan class="failt">■ not solved</tspan>)</text></svg>')
    return "".join(out)


def svg_funnel(task: str, funnel: dict[str, float], hits: dict[str, float]) -> str:
    """Per milestone (task order): the fraction that completed it and every earlier one (dark), and the
    fraction that completed it at all (light, behind)."""
    row, label_w, bar_w, top = 20, 140, 130, 22
    width = label_w + bar_w + 90
    out = [f'<svg class="plot funnel" viewBox="0 0 {width} {top + row * len(funnel) + 6}" width="{width}" role="img" '
           f'aria-label="milestone funnel {_esc(task)}"><text x="0" y="14" class="ptitle">{_esc(task)}</text>']
    for i, (m, f) in enumerate(funnel.items()):
        y = top + i * row
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" class="tick" text-anchor="end">{_esc(m)}</text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row - 6}" class="track"/>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * hits.get(m, 0):.1f}" height="{row - 6}" class="bar light">'
                   f"<title>{_esc(m)}: completed in {_pct(hits.get(m, 0))} of episodes</title></rect>"
                   f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * f:.1f}" height="{row - 6}" class="bar">'
                   f"<title>{_esc(m)}: {_pct(f)} completed it and every milestone above it</title></rect>"
                   f'<text x="{label_w + bar_w + 6}" y="{y + 14}" class="val">{f:.0%}'
                   + (f' <tspan class="tick">({hits.get(m, 0):.0%} at all)</tspan>' if hits.get(m, 0) != f else "")
                   + "</text>")
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------- viewer data
def _episode_frames(run_dir: Path, r: EpisodeResult) -> dict[str, Any]:

    ep = {"task": r.task_id, "seed": r.seed, "success": r.success, "return": round(r.return_, 4), "steps": r.steps,
          "dir": r.episode_dir, "error": r.error, "truncation": r.truncation_reason, "instruction": "", "frames": []}
    traj = run_dir / r.episode_dir / "trajectory.jsonl" if r.episode_dir else None
    if traj is None or not traj.exists():
        ep["note"] = "no trajectory file recorded for this episode"
        return ep
    meta, steps, _ = read_trajectory(traj)
    ep["instruction"] = meta.get("instruction", "")
    start = run_dir / r.episode_dir / "screenshots" / "0000.png"
    frames: list[dict[str, Any]] = [{"t": 0, "action": "(start)", "shot": f"{r.episode_dir}/screenshots/0000.png"
                                     if start.exists() else None, "reward": 0.0, "ret": 0.0, "milestones": []}]
    ret = 0.0
    for s in steps[:MAX_STEPS]:
        ret += s.reward
        audit = s.audit.model_dump(mode="json") if getattr(s, "audit", None) is not None else None
        if audit is None and r.audits and s.t - 1 < len(r.audits):
            audit = r.audits[s.t - 1]
        obs = s.observation if len(s.observation) <= OBS_CHARS else (
            s.observation[:OBS_CHARS] + f"\n[... {len(s.observation) - OBS_CHARS} more characters not embedded]")
        frames.append({
            "t": s.t, "action": s.action[:500], "parsed": s.parsed, "error": s.error, "url": s.url,
            "reward": round(s.reward, 4), "ret": round(ret, 4), "obs": obs, "audit": audit,
            "shot": f"{r.episode_dir}/{s.screenshot}" if s.screenshot else None,
            "milestones": [{"id": m.id, "category": m.category, "reward": round(m.reward, 4), "progress": m.progress,
                            "detail": m.evidence.detail} for m in s.milestones],
            "truncation": s.truncation_reason,
        })
    if len(steps) > MAX_STEPS:
        ep["note"] = f"only the first {MAX_STEPS} of {len(steps)} steps are embedded"
    ep["frames"] = frames
    return ep


def _pick_episodes(results: list[EpisodeResult]) -> list[EpisodeResult]:
    """At most MAX_EPISODES, round-robin over tasks so every task keeps some of its episodes."""
    if len(results) <= MAX_EPISODES:
        return results
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    picked: list[EpisodeResult] = []
    while len(picked) < MAX_EPISODES:
        for rs in by_task.values():
            if rs and len(picked) < MAX_EPISODES:
                picked.append(rs.pop(0))
    return picked


# ---------------------------------------------------------------- the page
def _header(s: dict[str, Any]) -> str:
    lo, hi = s.get("success_ci", [0, 1])
    rlo, rhi = s.get("return_ci", [0, 0])
    facts = [("agent", s.get("agent")), ("suite", s.get("suite", "—")), ("split", s.get("split", "—")),
             ("seeds", ", ".join(map(str, s.get("seeds", []))) or "—"), ("episodes", s.get("episodes")),
             ("errors", s.get("errors")), ("truncated", s.get("truncated")), ("workers", s.get("workers")),
             ("wall time", f"{s.get('wall_s', 0):.0f} s"), ("started", s.get("started_at")),
             ("git commit", (s.get("git_commit") or "—")[:18])]
    dl = "".join(f"<div><dt>{_esc(k)}</dt><dd>{_esc(v)}</dd></div>" for k, v in facts)
    return (f'<header><h1>{_esc(s.get("agent"))} on {_esc(s.get("suite", "tasks"))}'
            f'{" / " + _esc(s["split"]) if s.get("split") else ""}</h1>'
            f'<div class="kpis"><div class="kpi"><span class="big" id="overall-success">{_pct(s.get("success_rate", 0))}</span>'
            f'<span>success · 95% CI {_pct(lo)}–{_pct(hi)}</span></div>'
            f'<div class="kpi"><span class="big">{s.get("mean_return", 0):.3f}</span><span>mean return · 95% CI '
            f'{rlo:.3f}–{rhi:.3f}</span></div><div class="kpi"><span class="big">{s.get("mean_steps", 0):.1f}</span>'
            f'<span>mean steps</span></div></div><dl class="facts">{dl}</dl></header>')


def _task_table(s: dict[str, Any]) -> str:
    rows = []
    for tid, t in s.get("per_task", {}).items():
        lo, hi = t["success_ci"]
        rlo, rhi = t["return_ci"]
        errs = _esc("; ".join(t.get("error_messages", []))[:300])
        rows.append(
            f'<tr data-task="{_esc(tid)}"><td class="id">{_esc(tid)}</td><td>{_esc(t["category"])}</td><td>{t["tier"]}</td>'
            f'<td class="num">{t["episodes"]}</td><td class="succ"><span class="meter"><span style="width:{100 * t["success_rate"]:.1f}%">'
            f'</span></span> {_pct(t["success_rate"])} <small>[{_pct(lo)}, {_pct(hi)}]</small></td>'
            f'<td class="num">{t["mean_return"]:.3f} <small>[{rlo:.3f}, {rhi:.3f}]</small></td>'
            f'<td class="num">{t["mean_steps"]:.1f}</td><td class="num" title="{errs}">{t["errors"]}</td></tr>')
    return ('<table id="task-table"><thead><tr><th>task</th><th>category</th><th>tier</th><th>episodes</th>'
            '<th>success [95% CI]</th><th>mean return [95% CI]</th><th>mean steps</th><th>errors</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _group_table(name: str, groups: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="id">{_esc(g)}</td><td class="num">{v["episodes"]}</td><td>{_pct(v["success_rate"])} '
        f'<small>[{_pct(v["success_ci"][0])}, {_pct(v["success_ci"][1])}]</small></td>'
        f'<td class="num">{v["mean_return"]:.3f}</td><td class="num">{v["mean_steps"]:.1f}</td></tr>'
        for g, v in groups.items())
    return (f'<table class="small"><thead><tr><th>{_esc(name)}</th><th>episodes</th><th>success [95% CI]</th>'
            f'<th>mean return</th><th>mean steps</th></tr></thead><tbody>{rows}</tbody></table>')


FOLD_FUNNELS_ABOVE = 12


def _fold(funnels: str, n_tasks: int) -> str:
    """Many tasks: the funnels start folded, so the page stays short enough to reach the viewer."""
    if n_tasks <= FOLD_FUNNELS_ABOVE:
        return funnels
    return f'<details class="fold"><summary>show the funnels of all {n_tasks} tasks</summary>{funnels}</details>'


def render_report(run_dir: Path) -> str:
    """The report page's HTML for `run_dir` (which holds summary.json and results.jsonl)."""
    run_dir = Path(run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    results = load_results(run_dir)
    cats = s.get("per_category", {})
    plots = [svg_bars_ci(list(cats), [c["success_rate"] for c in cats.values()],
                         [tuple(c["success_ci"]) for c in cats.values()], title="success by category (95% CI)"),
             svg_histogram([r.return_ for r in results if r.success], [r.return_ for r in results if not r.success],
                           title="return distribution")]
    by_cat: dict[str, list[str]] = defaultdict(list)
    for tid, t in s.get("per_task", {}).items():
        by_cat[t["category"]].append(svg_funnel(tid, t["milestone_funnel"], t["milestone_hit_rate"]))
    funnels = "".join(f'<h4>{_esc(c)}</h4><div class="row funnels">{"".join(fs)}</div>' if len(by_cat) > 1
                      else f'<div class="row funnels">{"".join(fs)}</div>' for c, fs in by_cat.items())
    shown = _pick_episodes(results)
    episodes = [_episode_frames(run_dir, r) for r in shown]
    note = (f"{len(shown)} of {len(results)} episodes are in the viewer (evenly across tasks)."
            if len(shown) < len(results) else f"All {len(results)} episodes are in the viewer.")
    body = (_header(s)
            + f'<section><h2>Tasks</h2>{_task_table(s)}<div class="row">{_group_table("category", cats)}'
            f'{_group_table("tier", s.get("per_tier", {}))}</div></section>'
            + f'<section><h2>Plots</h2><div class="row">{"".join(plots)}</div>'
            f'<h3>Milestone funnel per task</h3><p class="hint">dark: completed this milestone and every one above it; '
            f'light: completed this milestone at all.</p>{_fold(funnels, len(s.get("per_task", {})))}</section>'
            + f'<section id="viewer-section"><h2>Trajectory viewer</h2><p class="hint">{_esc(note)} '
            f'Keys: ← → step, ↑ ↓ episode.</p><div id="viewer"></div></section>')
    data = json.dumps({"episodes": episodes}).replace("</", "<\\/")  # no "</script>" inside the script
    template = resources.files("agentrl").joinpath("report_assets", _TEMPLATE).read_text(encoding="utf-8")
    title = f"{s.get('agent')} on {s.get('suite', 'tasks')} — agentrl report"
    return template.replace("{{TITLE}}", _esc(title)).replace("{{BODY}}", body).replace("{{DATA}}", data)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` and return its path."""
    path = Path(run_dir) / "report.html"
    path.write_text(render_report(Path(run_dir)), encoding="utf-8")
    return path
