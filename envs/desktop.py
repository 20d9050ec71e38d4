"""The desktop environment: real X11 apps on a private Xvfb display, Gymnasium API, milestone rewards.

    env = DesktopEnv("tasks/desktop/notes-save-as.yaml")     # or gymnasium.make("agentrl/notes-save-as")
    obs, info = env.reset(seed=3)
    print(obs["text"])        # goal, windows, files changed, the AT-SPI tree with element ids
    obs, reward, terminated, truncated, info = env.step('type("hello")')
    env.step('key("ctrl+s")'); env.step("click(e7)"); env.step("click(512, 300)")

Each env owns a :class:`~agentrl.envs.xserver.DesktopSession` (Xvfb on a free display, its own D-Bus bus,
openbox, an AT-SPI bridge) kept across episodes. Each episode gets a fresh directory; its ``home/`` is
the apps' HOME and working directory, where the task's start files are written and the task's apps are
launched; every process of the episode is killed on reset and close. The reward is the same as the
browser env's: the task's milestones through :class:`MilestoneTracker`, reward = milestone weight earned.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from agentrl.envs.actions import MAX_ACTION_CHARS, Action, ActionError, parse_action
from agentrl.envs.axtree import AXTree, parse_snapshot
from agentrl.envs.desktop_observe import FileWatch, tree_text, zombie
from agentrl.envs.episode import EpisodeCore, EpisodeState, EpisodeViews, answer_of, last_action_text
from agentrl.envs.spaces import AnyText
from agentrl.envs.xserver import EPISODE_TAG, DesktopError, DesktopSession, cpu_state, kill_tagged
from agentrl.rewards.desktop_detectors import DesktopStepContext, WindowInfo
from agentrl.rewards.milestones import MilestoneTracker
from agentrl.sandbox.desktop import app_command, write_launchers
from gymnasium import spaces
from watchdog.observers import Observer

from agentrl.taskspec import TaskSpec, TaskVariant, load_task
from agentrl.types import (
    ActionEvent,
    EpisodeSummary,
    Event,
    FileEvent,
    ProcessEvent,
    WindowEvent,
)

#: The desktop action language (see agentrl.envs.actions): element ids where the AT-SPI tree has them,
#: screen coordinates anywhere.
DESKTOP_SIGNATURES: dict[str, Any] = {
    "click": [("id",), ("int", "int")],
    "double_click": [("id",), ("int", "int")],
    "fill": ("id", "str"),
    "type": ("str",),
    "key": ("str",),
    "focus": ("str",),
    "scroll": ("str",),
    "wait": (),
    "done": ("str",),
}
_SCROLL_BUTTON = {"up": "4", "down": "5", "left": "6", "right": "7"}

@dataclass
class DesktopEnvConfig:
    """Run-time options of the desktop env (the task file says what to do; this says how to run it)."""

    screenshot: bool = False  # add an RGB screenshot to every observation (and a PNG per step)
    size: tuple[int, int] = (1024, 768)
    max_steps: int | None = None  # overrides the task's max_steps
    root_dir: Path | None = None  # episode directories go here (default: a temp dir per env)
    record: bool = True  # write trajectory.jsonl (+ screenshots) into each episode directory
    keep_episode_dirs: bool = True  # False: delete an episode's directory when the next reset starts
    settle_timeout_s: float = 3.0  # cap on waiting for the desktop to stop changing after an action
    settle_interval_s: float = 0.04  # two observations this far apart that agree: settled
    app_start_timeout_s: float = 20.0  # every launched app must show a window within this
    max_nodes: int = 400  # accessibility nodes in the observation
    max_obs_chars: int = 100_000
    #: the budget of one step's line in trajectory.jsonl (as the browser env's: events, then text fields cut)
    max_record_chars: int = 300_000
    window_manager: bool = True  # openbox: focus, stacking, an active window
    #: how rewards are computed (`agentrl.rewards.router.RouterConfig` or a `RewardRouter`); None: the rules
    router: Any = None


@dataclass(kw_only=True)
class DesktopEpisode(EpisodeState):
    """One episode's apps, files and windows (besides what every episode holds)."""

    dir: Path
    home: Path
    variant: TaskVariant
    tracker: MilestoneTracker
    apps: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    watch: FileWatch | None = None
    windows: dict[int, WindowInfo] = field(default_factory=dict)
    procs: dict[int, ProcessEvent] = field(default_factory=dict)  # live tagged pid -> its start event
    checked: set[int] = field(default_factory=set)  # pids already read (tagged or not)
    raw_nodes: list[dict[str, Any]] = field(default_factory=list)  # the last AT-SPI walk
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> AT-SPI node, as observed
    ax: AXTree = field(default_factory=lambda: AXTree("", ()))
    first_shot: Any = None


class DesktopEnv(EpisodeViews, gym.Env[dict, str]):
    """Gymnasium env over a private X11 desktop.

    Observation: dict with ``text`` (goal, step, last action result, windows, files changed, notes, the
    accessibility tree with element ids — what an LLM reads), ``goal``, ``windows``, ``axtree``, ``files``,
    ``title`` (the focused window), ``url`` (always ""; the browser's key, kept for shared code),
    ``last_action_error``, and ``screenshot`` (H, W, 3 uint8) when `config.screenshot`.
    Action: a string in the desktop action language (:data:`DESKTOP_SIGNATURES`).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: TaskSpec | str | Path, config: DesktopEnvConfig | None = None, *,
                 render_mode: str | None = None, **config_kwargs: Any) -> None:
        if config_kwargs:
            config = DesktopEnvConfig(**{**(config.__dict__ if config else {}), **config_kwargs})
        self.spec_task = task if isinstance(task, TaskSpec) else load_task(task)
        self.config = config or DesktopEnvConfig()
        self.render_mode = render_mode
        self.max_steps = self.config.max_steps or self.spec_task.max_steps
        self._own_root = self.config.root_dir is None
        self.root_dir = Path(self.config.root_dir or tempfile.mkdtemp(prefix="agentrl-desktop-episodes-"))
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.session: DesktopSession | None = None
        self._infra: list[int] = []  # the desktop's own processes (X, bus, window manager, AT-SPI)
        self._observer: Any = None
        self._ep: DesktopEpisode | None = None
        obs_spaces: dict[str, spaces.Space] = {
            k: AnyText() for k in ("text", "goal", "windows", "axtree", "files", "title", "url", "last_action_error")
        }
        if self.config.screenshot:
            w, h = self.config.size
            obs_spaces["screenshot"] = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = AnyText(max_length=MAX_ACTION_CHARS)
        self._last_obs: dict[str, Any] | None = None
        self.core = EpisodeCore(self.spec_task, self.config.router, self.max_steps, record=self.config.record,
                                max_record_chars=self.config.max_record_chars)
        self.router = self.core.router

    # ------------------------------------------------------------------ properties shared with BrowserEnv
    @property
    def task(self) -> TaskSpec:
        return self.spec_task

    @property
    def home_dir(self) -> Path | None:
        """The episode's home: the apps' HOME and working directory, and what file detectors look at."""
        return self._ep.home if self._ep else None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        t0 = time.perf_counter()
        if self._ep is not None:
            self._end_episode(self._ep, "reset before the episode ended")
        if self.session is None or self.session.alive() is not None:
            self._restart_session()
        assert self.session is not None
        variant = self.spec_task.render(seed)
        episode_id = f"{self.spec_task.id}-s{seed}-{uuid.uuid4().hex[:8]}"
        ep_dir = self.root_dir / episode_id
        home = ep_dir / "home"
        home.mkdir(parents=True)
        for name, text in variant.files.items():
            (home / name).parent.mkdir(parents=True, exist_ok=True)
            (home / name).write_text(text)
        ep = DesktopEpisode(id=episode_id, dir=ep_dir, home=home, variant=variant,
                            tracker=MilestoneTracker(variant.milestones, self.spec_task.success_ids()))
        self._ep = ep
        ep.watch = FileWatch(home, {p.relative_to(home).as_posix() for p in home.rglob("*")})
        self._observer.schedule(ep.watch, str(home), recursive=True)
        self.session.xdotool("mousemove", str(self.config.size[0] - 1), str(self.config.size[1] - 1))
        try:
            self._launch(ep)
        except DesktopError:
            self._end_episode(ep, "the apps did not start")
            raise
        self._infra = self.session.busy_watch()  # AT-SPI's bus and registry start with the first app
        obs = self._settle_and_observe(ep, last_action=None, error=None, deadline_s=self.config.app_start_timeout_s)
        if self.config.screenshot or "screenshot" in ep.tracker.needs:
            ep.first_shot = self.session.grab()
        obs.pop("_screenshot_path", None)
        # what the start produced (windows opening, apps starting) is reported, not scored
        info = self.core.begin(ep, seed, obs["text"], display=self.session.display,
                               reset_ms=round((time.perf_counter() - t0) * 1000, 1))
        ep.events.clear()
        self._last_obs = obs
        return obs, info

    def step(self, action: str):
        ep = self._ep
        if ep is None:
            raise RuntimeError("call reset() before step()")
        if ep.ended:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset()")
        assert self.session is not None
        t0 = time.perf_counter()
        ep.t += 1
        mark = len(ep.events)
        action_text = action if isinstance(action, str) else repr(action)
        parsed = parse_action(action, signatures=DESKTOP_SIGNATURES, max_chars=MAX_ACTION_CHARS)
        error = str(parsed) if isinstance(parsed, ActionError) else None
        timings: dict[str, float] = {}
        if isinstance(parsed, Action):
            error = self._execute(ep, parsed)
        timings["act_ms"] = _ms(t0)
        t1 = time.perf_counter()
        try:
            obs = self._settle_and_observe(ep, last_action=parsed, error=error,
                                           deadline_s=0.6 if isinstance(parsed, ActionError) else None,
                                           min_s=_activation_delay(parsed))
        except DesktopError as e:
            return self._dead(ep, action_text, parsed, str(e), t0)
        timings["observe_ms"] = _ms(t1)
        crash = self._crashed(ep)
        if crash is not None:
            return self._dead(ep, action_text, parsed, crash, t0, obs)
        step_events = ep.events[mark:]
        # The same path as BrowserEnv.step: detectors -> MilestoneTracker -> reward router (rules first).
        reward, terminated, truncated, info = self.core.score(
            ep, action_text, parsed, error, obs, step_events, self._detector_context(ep, step_events, obs),
            t0=t0, timings=timings,
        )
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.session is None or self.session.alive() is not None:
            return None
        return np.asarray(self.session.grab().convert("RGB"), dtype=np.uint8)

    def summary(self) -> EpisodeSummary:
        assert self._ep is not None
        return self.core.summary(self._ep)

    def close(self) -> None:
        if self._ep is not None:
            self._end_episode(self._ep, "env closed")
            self._ep = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self.session is not None:
            self.session.close()
            self.session = None
        if self._own_root and not self.config.keep_episode_dirs:
            shutil.rmtree(self.root_dir, ignore_errors=True)
        super().close()

    # ------------------------------------------------------------------ episodes
    def _restart_session(self) -> None:
        if self.session is not None:
            self.session.close()
        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        w, h = self.config.size
        self.session = DesktopSession.start(w, h, window_manager=self.config.window_manager)
        write_launchers(self.session.bin)

    def _app_env(self, ep: DesktopEpisode) -> dict[str, str]:
        assert self.session is not None
        home = str(ep.home)
        return {**self.session.base_env(), "HOME": home, "PWD": home, "XDG_CONFIG_HOME": f"{home}/.config",
                "XDG_CACHE_HOME": f"{home}/.cache", "XDG_DATA_HOME": f"{home}/.local/share",
                EPISODE_TAG: ep.id}

    def _launch(self, ep: DesktopEpisode) -> None:
        """Start the task's apps one after the other, each once the one before shows its window and is
        focused: the last one launched is in front, whatever their start-up times."""
        assert self.session is not None
        env = self._app_env(ep)
        deadline = time.monotonic() + self.config.app_start_timeout_s
        for line in ep.variant.task.start.launch:
            with (ep.dir / "apps.log").open("ab") as log:
                proc = subprocess.Popen(app_command(line), cwd=ep.home, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, start_new_session=True)
            ep.apps.append((line.split()[0], proc))
            while not any(w.pid == proc.pid and (w.focused or not self.config.window_manager)
                          for w in self.session.windows()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = (f"exited with status {proc.returncode}" if proc.returncode is not None
                           else f"no focused window after {self.config.app_start_timeout_s:.0f} s")
                    tail = (ep.dir / "apps.log").read_text(errors="replace")[-600:]
                    raise DesktopError(f"app {line!r} did not start ({why}); apps.log: {tail}")
                time.sleep(0.03)

    def _end_episode(self, ep: DesktopEpisode, reason: str) -> None:
        """Record the end, kill every process of the episode, stop watching its files."""
        self.core.finish(ep, reason)
        kill_tagged(EPISODE_TAG, ep.id)
        for _, p in ep.apps:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
        if ep.watch is not None and self._observer is not None:
            self._observer.unschedule_all()
        if self.session is not None and self.session.alive() is None:
            deadline = time.monotonic() + 3.0  # the X server drops a dead client's windows asynchronously
            while self.session.windows() and time.monotonic() < deadline:
                time.sleep(0.02)
        if not self.config.keep_episode_dirs:
            shutil.rmtree(ep.dir, ignore_errors=True)

    def _crashed(self, ep: DesktopEpisode) -> str | None:
        """Why the episode cannot go on (the display died, an app was killed or failed), or None."""
        assert self.session is not None
        dead = self.session.alive()
        if dead is not None:
            return dead
        for name, p in ep.apps:
            rc = p.poll()
            if rc is not None and rc < 0:
                return f"app {name} (pid {p.pid}) crashed: killed by {signal.Signals(-rc).name}"
            if rc is not None and rc > 0:
                return f"app {name} (pid {p.pid}) crashed: exit status {rc}"
        return None

    def _dead(self, ep: DesktopEpisode, action_text: str, parsed: Any, reason: str, t0: float,
              obs: dict[str, Any] | None = None):
        return self.core.dead(ep, action_text, parsed, reason, obs or self._error_obs(ep, reason), t0=t0,
                              events=ep.events[-50:])

    # ------------------------------------------------------------------ acting
    def _execute(self, ep: DesktopEpisode, action: Action) -> str | None:
        """Carry out the action with real X input (xdotool); returns an error message for the agent, or None."""
        assert self.session is not None
        el = None
        xy: tuple[int, int] | None = None
        if action.target is not None:
            el = ep.ax.by_ref(action.target)
            node = ep.nodes.get(action.target)
            if el is None or node is None:
                ids = ", ".join(ep.ax.refs()[:12])
                return f"{action}: there is no element {action.target} (ids now: {ids}…)"
            box = node.get("box")
            if not box or box[2] <= 0 or box[3] <= 0:
                return f"{action}: element {action.target} has no place on the screen"
            xy = (box[0] + box[2] // 2, box[1] + box[3] // 2)
        elif action.name in ("click", "double_click"):
            xy = (int(action.args[0]), int(action.args[1]))
            w, h = self.config.size
            if not (0 <= xy[0] < w and 0 <= xy[1] < h):
                return f"{action}: ({xy[0]}, {xy[1]}) is off the screen ({w}x{h})"
        event = ActionEvent(name=action.name, target=action.target, role=el.role if el else None,
                            label=el.name if el else None,
                            value=action.args[-1] if action.args and action.name not in ("click", "double_click") else None)
        err: str | None = None
        x = self.session.xdotool
        if xy is not None:
            # Point first and let the app see the pointer arrive: a press that reaches a GTK button before
            # its enter event is not a click.
            err = x("mousemove", "--sync", str(xy[0]), str(xy[1]))
            self._quiet(ep)
        match action.name:
            case _ if err is not None:
                pass
            case "click":
                err = x("click", "--delay", "0", "1")
            case "double_click":
                err = x("click", "--repeat", "2", "--delay", "40", "1")
            case "fill":
                # click, let the entry take the click, then select all and type over it
                err = x("click", "--delay", "0", "1")
                self._quiet(ep)
                keys = ["type", "--delay", "4", "--", action.args[1]] if action.args[1] else ["key", "BackSpace"]
                err = err or x("key", "--clearmodifiers", "ctrl+a", *keys)
            case "type":
                err = x("type", "--delay", "4", "--", action.args[0]) if action.args[0] else "type(): the text is empty"
            case "key":
                combo = action.args[0].strip()
                err = x("key", "--clearmodifiers", "--", *combo.split()) if combo else "key(): the key is empty"
            case "focus":
                err = self._focus(action.args[0])
            case "scroll":
                err = x("click", "--repeat", "3", "--delay", "0", _SCROLL_BUTTON[action.args[0]])
            case "wait":
                time.sleep(0.5)
            case "done":
                ep.answer = action.args[0]
        if err is not None:
            ep.events.append(event.model_copy(update={"ok": False}))
            return f"{action} failed: {err}" if not err.startswith(action.name) else err
        ep.events.append(event)
        return None

    def _quiet(self, ep: DesktopEpisode, max_s: float = 1.0) -> None:
        """Wait (at most `max_s`) until the desktop has handled the input so far: nothing runnable and no
        CPU time used between two looks 20 ms apart."""
        watch = {*self._infra, *ep.procs}
        deadline = time.monotonic() + max_s
        prev = cpu_state(watch)
        while time.monotonic() < deadline:
            time.sleep(0.02)
            cur = cpu_state(watch)
            if cur == prev and not cur[0]:
                return
            prev = cur

    def _focus(self, title: str) -> str | None:
        assert self.session is not None
        wins = self.session.windows()
        low = title.lower()
        match = next((w for w in wins if w.title == title), None) or next(
            (w for w in reversed(wins) if low in w.title.lower()), None)
        if match is None:
            return f"no window titled {title!r} (windows: {', '.join(repr(w.title) for w in wins) or 'none'})"
        return self.session.xdotool("windowactivate", str(match.id))

    # ------------------------------------------------------------------ observing
    def _settle_and_observe(self, ep: DesktopEpisode, *, last_action: Any, error: str | None,
                            deadline_s: float | None = None, min_s: float = 0.0) -> dict[str, Any]:
        """Wait until the apps have reacted, then observe. Settled: two quick looks `settle_interval_s`
        apart agree on the windows, the pending file events and the desktop's CPU time, and none of its
        processes is runnable (or the settle timeout passed). Only then is the accessibility tree walked
        (the expensive part, ~10-80 ms): walking it makes the apps busy answering. `min_s`: settle no sooner
        (GTK activates a focused button 250 ms after Return or space: nothing runs meanwhile)."""
        assert self.session is not None
        mark = len(ep.events)
        start = time.monotonic()
        deadline = start + (deadline_s or self.config.settle_timeout_s)
        watch = {*self._infra, *ep.procs}
        time.sleep(0.02)
        prev = self._quick_look(ep, watch)
        while time.monotonic() < deadline:
            time.sleep(self.config.settle_interval_s)
            cur = self._quick_look(ep, watch)
            if cur == prev and not cur[1][0] and time.monotonic() - start >= min_s:
                break
            prev = cur
        try:
            ep.raw_nodes = self.session.ax_nodes(self.config.max_nodes)
        except DesktopError as e:
            ep.raw_nodes = [{"error": str(e)}]
        self._quick_look(ep, watch)  # the windows at least as new as the files drained next
        files = ep.watch.drain() if ep.watch else []
        ep.events.extend(files)
        self._scan_processes(ep)
        return self._observation(ep, last_action, error, files, ep.events[mark:])

    def _quick_look(self, ep: DesktopEpisode, watch: set[int]) -> tuple[Any, ...]:
        """Windows (recording what changed as WindowEvents), CPU state of `watch`, pending file events."""
        assert self.session is not None
        dead = self.session.alive()
        if dead is not None:
            raise DesktopError(dead)
        wins = self.session.windows()
        self._window_events(ep, wins)
        return tuple(wins), cpu_state(watch), len(ep.watch.events) if ep.watch else 0

    def _window_events(self, ep: DesktopEpisode, wins: list[WindowInfo]) -> None:
        now = {w.id: w for w in wins}
        for wid, w in ep.windows.items():
            if wid not in now:
                ep.events.append(WindowEvent(change="closed", title=w.title, wm_class=w.wm_class, window=wid, pid=w.pid))
        for wid, w in now.items():
            old = ep.windows.get(wid)
            if old is None:
                ep.events.append(WindowEvent(change="opened", title=w.title, wm_class=w.wm_class, window=wid, pid=w.pid))
            elif old.title != w.title:
                ep.events.append(WindowEvent(change="renamed", title=w.title, wm_class=w.wm_class, window=wid, pid=w.pid))
            if w.focused and (old is None or not old.focused):
                ep.events.append(WindowEvent(change="focused", title=w.title, wm_class=w.wm_class, window=wid, pid=w.pid))
        ep.windows = now

    def _scan_processes(self, ep: DesktopEpisode) -> None:
        """ProcessEvents for the episode's processes (tagged in their environment) that started or exited."""
        want = f"{EPISODE_TAG}={ep.id}".encode()
        live: set[int] = set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            if pid in ep.procs:
                live.add(pid)
                continue
            if pid in ep.checked:
                continue
            ep.checked.add(pid)
            try:
                if want not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                    continue
                argv = [a.decode(errors="replace") for a in Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0") if a]
                comm = Path(f"/proc/{d}/comm").read_text().strip()
            except OSError:
                continue
            name = Path(argv[1]).stem if comm.startswith("python") and len(argv) > 1 else comm
            ev = ProcessEvent(change="started", pid=pid, name=name, cmdline=" ".join(argv))
            ep.procs[pid] = ev
            ep.events.append(ev)
            live.add(pid)
        apps = {p.pid: p for _, p in ep.apps}
        for pid in [p for p in ep.procs if p not in live or zombie(p)]:
            ev = ep.procs.pop(pid)
            rc = None
            if pid in apps:  # our child, dead: its status is there to collect (it may still be a zombie)
                try:
                    rc = apps[pid].wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            ep.events.append(ProcessEvent(change="exited", pid=pid, name=ev.name, cmdline=ev.cmdline, returncode=rc))

    def _observation(self, ep: DesktopEpisode, last_action: Any, error: str | None, files: list[FileEvent],
                     new_events: list[Event]) -> dict[str, Any]:
        snapshot, refs = tree_text(ep.raw_nodes)
        ep.nodes = refs
        ep.ax = parse_snapshot(snapshot)
        wins = list(ep.windows.values())
        focused = next((w.title for w in wins if w.focused), "")
        last = last_action_text(last_action, error)
        windows_text = "\n".join(w.line() for w in wins) or "(no windows)"
        shown = [f for f in files if not any(part.startswith(".") for part in Path(f.path).parts)]
        files_text = ", ".join(f"{f.change} {f.path}" for f in shown) or "none"
        notes = [f"process {e.name} (pid {e.pid}) exited" + (f" with status {e.returncode}" if e.returncode is not None else "")
                 for e in new_events if isinstance(e, ProcessEvent) and e.change == "exited"]
        parts = [f"Goal: {ep.variant.instruction}", f"Step: {ep.t}/{self.max_steps}", f"Last action: {last}",
                 "Windows:", windows_text, f"Files changed: {files_text}", *[f"Note: {n}" for n in notes],
                 "Accessibility tree:", snapshot or "(no accessible apps: use click(x, y), type and key)"]
        text = "\n".join(parts)
        if len(text) > self.config.max_obs_chars:
            text = text[: self.config.max_obs_chars] + "\n[observation cut at max_obs_chars]"
        obs: dict[str, Any] = {"text": text, "goal": ep.variant.instruction, "windows": windows_text,
                               "axtree": snapshot, "files": files_text, "title": focused, "url": "",
                               "last_action_error": error or ""}
        if self.config.screenshot:
            assert self.session is not None
            img = self.session.grab().convert("RGB")
            obs["screenshot"] = np.asarray(img, dtype=np.uint8)
            if self.config.record:
                shot = ep.dir / "screenshots" / f"{ep.t:04d}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                img.save(shot)
                obs["_screenshot_path"] = shot.relative_to(ep.dir).as_posix()
        return obs

    def _error_obs(self, ep: DesktopEpisode, error: str) -> dict[str, Any]:
        obs: dict[str, Any] = {"text": f"Goal: {ep.variant.instruction}\nLast action: ERROR: {error}\n",
                               "goal": ep.variant.instruction, "windows": "", "axtree": "", "files": "", "title": "",
                               "url": "", "last_action_error": error}
        if self.config.screenshot:
            w, h = self.config.size
            obs["screenshot"] = np.zeros((h, w, 3), dtype=np.uint8)
        return obs

    def _detector_context(self, ep: DesktopEpisode, step_events: list[Event], obs: dict[str, Any]) -> DesktopStepContext:
        assert self.session is not None
        shot = self.session.grab() if "screenshot" in ep.tracker.needs else None
        return DesktopStepContext(
            step=ep.t, events=step_events, history=list(ep.events), url="", title=obs["title"], ax=ep.ax,
            episode_dir=ep.home,
            answer=answer_of(ep, step_events),
            windows=list(ep.windows.values()), screenshot=shot, first_screenshot=ep.first_shot,
        )


_ACTIVATION_KEYS = re.compile(r"(?:^|[\s+])(?:Return|KP_Enter|space)$", re.I)


def _activation_delay(action: Action | ActionError) -> float:
    """How long GTK may take, doing nothing, before it reacts: a button activated from the keyboard shows
    itself pressed for 250 ms before it emits `clicked` (GtkButton's ACTIVATE_TIMEOUT)."""
    if isinstance(action, Action) and action.name in ("key", "type") and action.args:
        text = action.args[0]
        if action.name == "type" and (text.endswith("\n") or text == " "):
            return 0.3
        if action.name == "key" and _ACTIVATION_KEYS.search(text.strip()):
            return 0.3
    return 0.0


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


