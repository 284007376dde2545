"""The Lessons tab and ``?lesson=NAME``: one click loads a lesson's models, sets the views, presses
the buttons that make its point, and writes its explanation, measured on those models, in the
banner at the top of the page. Every control stays live afterwards.

A lesson runs as a chain of the page's own events (Gradio runs each step after the previous one):
choose the models and views, load each model (the side-by-side view's loaders, or the Explore
page's), draw, then ``finish``: the picks, the buttons, the words.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from vaescope.errors import InputError
from vaescope.explorer.core.lessons import LESSONS, Lesson, find, missing_models
from vaescope.explorer.ui.common import Context, log
from vaescope.explorer.ui.compare import SIDES, ComparePanel
from vaescope.explorer.ui.state import SessionPair

INTRO = ("**Lessons.** Each one loads the models that show one idea of the lectures, sets the views and "
         "explains what to look at, with numbers measured on those models. Every control stays live. "
         "Each has a link (`?lesson=NAME`), so a list of links is a lecture plan.")
URL_LESSON_JS = "() => new URLSearchParams(window.location.search).get('lesson') || ''"
# a one-model lesson whose view is one of the Explore page's lower tabs brings that tab on screen
SCROLL_TO_VIEW_JS = ("(name) => { if (%s.includes(name)) { const t = document.querySelector('#main-tabs');"
                     " if (t) t.scrollIntoView({block: 'start'}); } }")


class LessonsPanel:
    def __init__(self, ctx: Context, compare: ComparePanel) -> None:
        self.ctx = ctx
        self.compare = compare
        self.buttons: dict[str, Any] = {}
        # set by the app: the top tabs, the Explore page's model dropdown, tabs and session, and what
        # to run on the Explore page once a one-model lesson's model is there (by the lesson's view;
        # "*": for every one-model lesson)
        self.top_tabs: Any = None
        self.explore_tabs: Any = None
        self.models: Any = None
        self.session: Any = None
        self.followups: dict[str, list[tuple[Any, list[Any], list[Any]]]] = {}

    def build_banner(self) -> None:
        with gr.Group(visible=False, elem_id="lesson-banner-group") as self.banner_group:
            self.banner = gr.Markdown("", elem_id="lesson-banner")
            self.chart = gr.Plot(visible=False, show_label=False, elem_id="lesson-chart")
        self.name = gr.Textbox("", visible="hidden", elem_id="lesson-name")

    def build(self) -> None:
        gr.Markdown(INTRO, elem_classes="caption")
        names = self.ctx.store.names()
        for number, lesson in enumerate(LESSONS, 1):
            missing = missing_models(lesson, names)
            with gr.Row(equal_height=True, elem_classes="lesson-row"):
                where = "side by side" if len(lesson.models) == 2 else "Explore page"
                needs = ", ".join(m.removesuffix(".safetensors") for m in lesson.models)
                status = (f" · *needs {', '.join(m.removesuffix('.safetensors') for m in missing)}, not in this "
                          f"folder*" if missing else "")
                gr.Markdown(f"**{number}. {lesson.title}** — {lesson.summary}  \n<small>{where}: {needs} · "
                            f"link: <a href='?lesson={lesson.name}'>?lesson={lesson.name}</a>{status}</small>")
                self.buttons[lesson.name] = gr.Button("Start", size="sm", scale=0, min_width=90,
                                                      interactive=not missing, elem_id=f"lesson-{lesson.name}")

    # -- events --
    def wire(self, demo: gr.Blocks) -> None:
        """Wire every lesson's chain: one per Start button, and one for ``?lesson=NAME`` on page load."""
        heads = [(button.click(lambda n=name: n, None, [self.name], queue=False, show_progress="hidden"))
                 for name, button in self.buttons.items()]
        heads.append(demo.load(None, None, [self.name], js=URL_LESSON_JS))
        for head in heads:
            self._chain(head)

    def _chain(self, head: Any) -> None:
        compare = self.compare
        start_out = [self.banner_group, self.banner, self.chart, self.top_tabs, self.explore_tabs,
                     self.models.dropdown, compare.method, compare.color, compare.overlay,
                     *compare.outputs("model")]
        started = head.then(self.start, [self.name], start_out, show_progress="hidden")
        # the side-by-side lessons: load both sides (skipped by an empty name), draw, finish
        step = started
        for side in SIDES:
            model = compare.side(side, "model")
            side_out = [compare.side(side, p) for p in ("plot", "info", "overlays", "note", "result", "chart")]
            step = step.then(self._compare_loader(side), [self.name, model, compare.pair], side_out,
                             show_progress_on=[compare.side(side, "plot")])
        step = step.then(self._drawer(), [self.name, compare.method, compare.color, compare.overlay, compare.pair],
                         compare.draw_outputs())
        finish_out = [self.banner, self.chart, compare.original, *compare.outputs("recon"), compare.picked_info,
                      *compare.outputs("note"), *compare.outputs("result"), *compare.outputs("chart"),
                      *compare.outputs("overlays")]
        step = step.then(self.finish, [self.name, compare.pair], finish_out)
        # the one-model lessons: the Explore page's own switch, then its map ("*") and its panels
        step = step.then(self._explore_loader(), [self.name, self.models.dropdown, self.session],
                         self.models.outputs(), show_progress_on=[self.models.card])
        for view, steps in self.followups.items():
            for fn, inputs, outputs in steps:
                step = step.then(self._only_for(view, fn), [self.name, *inputs], outputs)
        step.then(None, [self.name], None, js=SCROLL_TO_VIEW_JS % json.dumps(
            [lesson.name for lesson in LESSONS if len(lesson.models) == 1 and lesson.view != "map"]))

    # -- handlers --
    def start(self, name: str) -> dict[Any, Any]:
        """Choose the lesson's models and views (the models load in the next steps)."""
        lesson = find(name)
        if lesson is None:
            return {self.banner_group: gr.Group(visible=False)} if not name else self._unknown(name)
        missing = missing_models(lesson, self.ctx.store.names())
        if missing:
            gr.Warning(f"The lesson “{lesson.title}” needs {', '.join(missing)}, which this server does not have.")
            return {self.banner_group: gr.Group(visible=True),
                    self.banner: f"**{lesson.title}** needs {', '.join(missing)}: start the explorer on the shipped "
                                 f"models (`make run`) to give it.", self.chart: gr.Plot(visible=False)}
        updates: dict[Any, Any] = {self.banner_group: gr.Group(visible=True),
                                   self.banner: f"### {lesson.title}\nLoading the models…",
                                   self.chart: gr.Plot(visible=False)}
        if len(lesson.models) == 2:
            updates |= {self.top_tabs: gr.Tabs(selected="compare"), self.compare.method: lesson.method,
                        self.compare.color: lesson.color, self.compare.overlay: lesson.overlay,
                        self.compare.side("a", "model"): lesson.models[0],
                        self.compare.side("b", "model"): lesson.models[1]}
        else:
            updates |= {self.top_tabs: gr.Tabs(selected="explore"), self.models.dropdown: lesson.models[0]}
            if lesson.view != "map":
                updates[self.explore_tabs] = gr.Tabs(selected=lesson.view)
        return updates

    def _compare_loader(self, side: str) -> Any:
        def load_lesson_side(name: str, model: str | None, pair: SessionPair) -> Any:
            lesson = find(name)
            if lesson is None or len(lesson.models) != 2 or missing_models(lesson, self.ctx.store.names()):
                return gr.skip()
            return self.compare.load(side, model, pair)
        return load_lesson_side

    def _drawer(self) -> Any:
        def draw_lesson(name: str, method: str, color: str, overlay: str, pair: SessionPair) -> Any:
            lesson = find(name)
            if lesson is None or len(lesson.models) != 2 or pair.a.key is None or pair.b.key is None:
                return gr.skip()
            return self.compare.draw_both(method, color, overlay, pair)
        return draw_lesson

    def _explore_loader(self) -> Any:
        def load_lesson_model(name: str, model: str | None, session: Any) -> Any:
            lesson = find(name)
            if lesson is None or len(lesson.models) != 1 or missing_models(lesson, self.ctx.store.names()):
                return gr.skip()
            return self.models.load_checkpoint(model, session)
        return load_lesson_model

    def _only_for(self, view: str, fn: Any) -> Any:
        def followup(name: str, *args: Any) -> Any:
            lesson = find(name)
            wanted = len(lesson.models) == 1 if view == "*" and lesson is not None else (
                lesson is not None and lesson.view == view)
            if not wanted or missing_models(lesson, self.ctx.store.names()):
                return gr.skip()
            return fn(*args)
        return followup

    def finish(self, name: str, pair: SessionPair) -> Any:
        """The lesson's picks and buttons on the side-by-side view, and its words in the banner."""
        lesson = find(name)
        if lesson is None or missing_models(lesson, self.ctx.store.names()):
            return gr.skip()
        try:
            entries = [self.ctx.store.open_name(m) for m in lesson.models]
            updates = self._press(lesson, entries, pair) if len(lesson.models) == 2 else {}
            words = lesson.explain(entries, self.ctx.store)
            chart = lesson.chart(entries, self.ctx.store) if lesson.chart is not None else None
        except InputError as exc:
            return {self.banner: f"### {lesson.title}\n⚠️ {exc}"}
        except Exception as exc:  # a bug: keep the page, say so
            log.exception("lesson %s failed", lesson.name)
            return {self.banner: f"### {lesson.title}\n⚠️ The lesson failed ({type(exc).__name__}: {exc}); the server "
                                 "log has the details."}
        updates[self.banner] = f"### {lesson.title}\n{words}"
        updates[self.chart] = gr.Plot(value=chart, visible=chart is not None)
        return updates

    def _press(self, lesson: Lesson, entries: list[Any], pair: SessionPair) -> dict[Any, Any]:
        updates: dict[Any, Any] = {}
        for index in lesson.picks(entries):
            payload = f'{{"kind": "point", "side": "a", "index": {int(index)}}}'
            picked = self.compare.pick(payload, pair)
            if isinstance(picked, dict):
                updates |= picked
        for action in lesson.actions:
            answered = self.compare.actor(action)(pair)
            if isinstance(answered, dict):
                updates |= answered
        return updates

    def _unknown(self, name: str) -> dict[Any, Any]:
        known = ", ".join(lesson.name for lesson in LESSONS)
        return {self.banner_group: gr.Group(visible=True), self.banner: f"No lesson is called “{name[:60]}”. "
                f"The lessons: {known}.", self.chart: gr.Plot(visible=False)}
