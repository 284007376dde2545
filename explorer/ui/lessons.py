"""The Lessons tab and ``?lesson=NAME``: one click loads a lesson's models, sets the views, presses
the buttons that make its point, and writes its explanation, measured on those models, in the
banner at the top of the page. Every control stays live afterwards.

A lesson is data (``core.lessons.Lesson``: its models, views, settings, picks, buttons and words).
It runs as the page's own events: ``start`` chooses the models and views, then four branches run at
once (each Gradio event is a round trip and a redraw in the page, so the lesson opens as fast as its
slowest branch, not the sum of its steps): the words, the presenter's screen, the side-by-side view
(``open_compare``: both models loaded and drawn, then the picks and buttons through the view's typed
methods ``ActionBar.pick_index`` and ``ActionBar.act``), and the Explore page's switch and panels.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from vaescope.errors import InputError
from vaescope.explorer.core.lessons import (
    LESSONS,
    Lesson,
    Picture,
    find,
    measured,
    missing_models,
    stage_content,
)
from vaescope.explorer.ui.common import PROGRESS, Context, as_response, grid, log
from vaescope.explorer.ui.compare import CompareView
from vaescope.explorer.ui.models import ModelsPanel
from vaescope.explorer.ui.state import SessionPair

INTRO = ("**Lessons.** Each one loads the models that show one idea of the lectures, sets the views and "
         "explains what to look at, with numbers measured on those models. Every control stays live. "
         "Each has a link (`?lesson=NAME`), so a list of links is a lecture plan; add `&present=1` for the "
         "projector.")
# A lesson's screen in the presenter layout (static/style.css): its words on the left, its panes on
# the right, STAGE_PX tall in all at 1280x720; images keep whole upscaling factors, and the maps and
# figures take the height the images leave.
STAGE_PX = 640
PICTURE_CHROME_PX = 40  # a picture's label and margins
MIN_PLOT_PX = 220
URL_LESSON_JS = "() => new URLSearchParams(window.location.search).get('lesson') || ''"
# the presenter layout's live views (the page's tabs) or the lesson's own screen: a page class
LIVE_JS = ("() => { document.body.classList.toggle('live', %s); "
           "window.vaescopeResizePlots && window.vaescopeResizePlots(); }")
# a branch of a lesson's events ran (``LessonsPanel._chain``); once all of them have, the page notes it
# (body[data-lesson-done], which tests wait for) and a one-model lesson whose view is one of the
# Explore page's lower tabs brings that tab on screen
BRANCH_DONE_JS = ("(name) => { const s = (window.__lessonBranches && window.__lessonBranches.name === name)"
                  " ? window.__lessonBranches : (window.__lessonBranches = {name, done: 0});"
                  " if (++s.done < %d) return; s.done = 0; document.body.dataset.lessonDone = name;"
                  " if (%s.includes(name) && !document.body.classList.contains('present')) {"
                  " const t = document.querySelector('#main-tabs'); if (t) t.scrollIntoView({block: 'start'}); } }")


Followup = tuple[Callable[..., Any], list[Any], list[Any]]  # (handler, inputs, outputs) of an Explore page event


@dataclass(frozen=True)
class LessonPage:
    """What a lesson drives beyond the side-by-side view, built with the page's layout and given to
    ``LessonsPanel.wire``: the page's tabs, and what to run on the Explore page once a one-model
    lesson's model is there, by the lesson's view ("*": every one-model lesson)."""

    top_tabs: Any
    explore_tabs: Any
    followups: dict[str, list[Followup]]


class LessonsPanel:
    def __init__(self, ctx: Context, compare: CompareView, models: ModelsPanel, session: gr.State) -> None:
        self.ctx = ctx
        self.compare = compare  # the side-by-side view a two-model lesson runs in
        self.models = models  # the Explore page's model panel a one-model lesson switches
        self.session = session  # the Explore page's session
        self.buttons: dict[str, Any] = {}

    def build_banner(self) -> None:
        """The lesson's banner: its words and chart; in the presenter layout, the lesson's own screen
        (its words beside its maps, figures, chart and images: ``core.lessons.Stage``)."""
        with gr.Group(visible=False, elem_id="lesson-banner-group") as self.banner_group, \
                gr.Row(equal_height=False, elem_id="lesson-stage"):
            with gr.Column(scale=2, min_width=300, elem_id="lesson-words"):
                self.banner = gr.Markdown("", elem_id="lesson-banner")
                with gr.Row(elem_id="lesson-tools"):
                    # the presenter layout's two screens: the lesson, and the live views behind it
                    self.live_btn = gr.Button("Explore it live ▸", size="sm", elem_id="lesson-live-btn")
                    self.back_btn = gr.Button("◂ Back to the lesson", size="sm", elem_id="lesson-back-btn")
                    self.close_btn = gr.Button("✕ Close the lesson", size="sm", elem_id="lesson-close-btn")
            with gr.Column(scale=3, min_width=300, elem_id="lesson-panes"):
                with gr.Row(equal_height=True, elem_id="stage-maps"):
                    self.stage_maps = [gr.Plot(visible=False, show_label=False, elem_id=f"stage-map-{side}")
                                       for side in "ab"]
                with gr.Row(equal_height=True, elem_id="stage-figures"):
                    self.stage_figures = [gr.Plot(visible=False, show_label=False, elem_id=f"stage-figure-{side}")
                                          for side in "ab"]
                self.chart = gr.Plot(visible=False, show_label=False, elem_id="lesson-chart")
                # plain <img> at their own size: whole upscaling factors, never rescaled or cropped
                self.stage_pictures = [gr.HTML("", visible=False, elem_id=f"stage-pictures-{side}", padding=False)
                                       for side in "ab"]
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
    def wire(self, demo: gr.Blocks, page: LessonPage) -> None:
        """Wire every lesson's chain: one per Start button, and one for ``?lesson=NAME`` on page load;
        the presenter toggle redraws the lesson's screen; the close button ends the lesson."""
        self.page = page  # start() selects its tabs
        heads = [(button.click(lambda n=name: n, None, [self.name], queue=False, show_progress="hidden"))
                 for name, button in self.buttons.items()]
        heads.append(demo.load(None, None, [self.name], js=URL_LESSON_JS))
        for head in heads:
            self._chain(head)
        self.models.present.change(self.stage, [self.name, self.models.present], self.stage_outputs(),
                                   show_progress="hidden")
        self.close_btn.click(lambda: ("", gr.Group(visible=False)), None, [self.name, self.banner_group],
                             queue=False, show_progress="hidden", js=LIVE_JS % "false")
        self.live_btn.click(None, None, None, js=LIVE_JS % "true")
        self.back_btn.click(None, None, None, js=LIVE_JS % "false")

    def stage_outputs(self) -> list[Any]:
        """What the lesson's screen shows beyond its words: maps, figures, chart and images."""
        return [*self.stage_maps, *self.stage_figures, self.chart, *self.stage_pictures]

    def _chain(self, head: Any) -> None:
        """One lesson's events: ``start`` (models and views chosen, the banner shown), then three
        branches at once, each as short as it can be: the words; the presenter's screen, then the
        Explore page's switch with its panels; the side-by-side view (both models loaded, drawn and
        the lesson's buttons pressed, in one event). The page notes when every branch ran."""
        compare, bar = self.compare, self.compare.bar
        start_out = [self.banner_group, self.banner, self.chart, self.page.top_tabs, self.page.explore_tabs,
                     self.models.dropdown, *bar.settings(), *(side.model for side in compare.sides.values())]
        started = head.then(self.start, [self.name], start_out, show_progress="hidden")
        # the presenter layout's screen of the lesson (nothing when the layout is off)
        staged = started.then(self.stage, [self.name, self.models.present], self.stage_outputs(),
                              show_progress="hidden")
        ends = [started.then(self.words, [self.name, self.models.present], [self.banner, self.chart],
                             show_progress="hidden"), staged,
                started.then(self.open_compare, [self.name, compare.pair], self.compare_outputs(),
                             show_progress_on=[side.plot for side in compare.sides.values()])]
        # the one-model lessons: the Explore page's own switch, then its map ("*") and its panels; after
        # the lesson's screen, whose view they would otherwise slow (the anomaly lesson's scores)
        step = staged.then(self._explore_loader(), [self.name, self.models.dropdown, self.session],
                           self.models.outputs(), show_progress_on=[self.models.card])
        for view, steps in self.page.followups.items():
            for fn, inputs, outputs in steps:
                step = step.then(self._only_for(view, fn), [self.name, *inputs], outputs)
        ends.append(step)
        one_model_views = json.dumps([lesson.name for lesson in LESSONS if len(lesson.models) == 1
                                      and lesson.view != "map"])
        for end in ends:
            end.then(None, [self.name], None, js=BRANCH_DONE_JS % (len(ends), one_model_views))

    def compare_outputs(self) -> list[Any]:
        """What opening a two-model lesson on the side-by-side view updates (each once)."""
        bar = self.compare.bar
        found = [*(c for side in self.compare.sides.values() for c in side.load_outputs()), *bar.draw_outputs(),
                 *bar.pick_outputs(), *bar.answer_outputs(), self.banner]
        return list(dict.fromkeys(found))

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
            bar = self.compare.bar
            updates |= {self.page.top_tabs: gr.Tabs(selected="compare"), bar.method: lesson.method,
                        bar.color: lesson.color, bar.overlay: lesson.overlay}
            updates |= {side.model: model for side, model in zip(self.compare.sides.values(), lesson.models,
                                                                 strict=True)}
        else:
            updates |= {self.page.top_tabs: gr.Tabs(selected="explore"), self.models.dropdown: lesson.models[0]}
            if lesson.view != "map":
                updates[self.page.explore_tabs] = gr.Tabs(selected=lesson.view)
        return updates

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

    def words(self, name: str, present: bool) -> Any:
        """The lesson's words in the banner, measured on its models, and its chart beside the views
        (in the presenter layout the lesson's screen sizes and shows the chart: ``stage``)."""
        lesson = find(name)
        if lesson is None or missing_models(lesson, self.ctx.store.names()):
            return gr.skip()
        try:
            entries = [self.ctx.store.open_name(m) for m in lesson.models]
            words, chart = measured(lesson, entries, self.ctx.store)
        except InputError as exc:
            return {self.banner: f"### {lesson.title}\n⚠️ {exc}"}
        except Exception as exc:  # a bug: keep the page, say so
            log.exception("lesson %s failed", lesson.name)
            return {self.banner: f"### {lesson.title}\n⚠️ The lesson failed ({type(exc).__name__}: {exc}); the server "
                                 "log has the details."}
        updates: dict[Any, Any] = {self.banner: f"### {lesson.title}\n{words}"}
        if not present:
            updates[self.chart] = gr.Plot(value=chart, visible=chart is not None)
        return updates

    def open_compare(self, name: str, pair: SessionPair, progress: Any = PROGRESS) -> Any:
        """A two-model lesson on the side-by-side view, as one event: both models loaded, both maps
        drawn with the lesson's settings, then its picks and buttons; nothing for another lesson."""
        lesson = find(name)
        if lesson is None or len(lesson.models) != 2 or missing_models(lesson, self.ctx.store.names()):
            return gr.skip()
        updates: dict[Any, Any] = {}
        for side, model in zip(self.compare.sides.values(), lesson.models, strict=True):
            loaded = side.load(model, pair, progress)
            updates |= loaded if isinstance(loaded, dict) else {}
        if pair.a.key is None or pair.b.key is None:  # a side could not load: its note says why
            return as_response(updates)
        try:
            drawn = self.compare.bar.draw_both(lesson.method, lesson.color, lesson.overlay, pair)
            updates |= drawn if isinstance(drawn, dict) else {}
            updates |= self._press(lesson, [self.ctx.store.open_name(m) for m in lesson.models], pair)
        except (gr.Error, InputError) as exc:
            updates[self.banner] = f"### {lesson.title}\n⚠️ {exc}"
        except Exception as exc:  # a bug: keep the page, say so
            log.exception("lesson %s failed on the side-by-side view", lesson.name)
            updates[self.banner] = (f"### {lesson.title}\n⚠️ The lesson failed ({type(exc).__name__}: {exc}); the "
                                    "server log has the details.")
        return as_response(updates)

    def _press(self, lesson: Lesson, entries: list[Any], pair: SessionPair) -> dict[Any, Any]:
        """The lesson's picks (on side A's map) and buttons; nothing if a side changed models meanwhile."""
        versions = pair.versions()
        bar, updates = self.compare.bar, {}
        for index in lesson.picks(entries):
            updates |= bar.pick_index("a", int(index), pair)
        if lesson.actions:
            updates |= bar.act(lesson.actions, pair)
        return updates if pair.versions() == versions else {}

    def stage(self, name: str, present: bool) -> Any:
        """The lesson's own screen in the presenter layout (nothing outside it: the page's views show
        the lesson there): ``core.lessons.stage_content`` on its models, sized to fit 1280x720."""
        lesson = find(name)
        hidden = {**{plot: gr.Plot(value=None, visible=False) for plot in (*self.stage_maps, *self.stage_figures)},
                  **{image: gr.HTML("", visible=False) for image in self.stage_pictures}}
        if lesson is None or missing_models(lesson, self.ctx.store.names()):
            return hidden
        if not present:  # the banner's chart as the page shows it beside the views
            return hidden
        try:
            entries = [self.ctx.store.open_name(m) for m in lesson.models]
            content = stage_content(lesson, entries, self.ctx.store, self.ctx.projections)
            chart = measured(lesson, entries, self.ctx.store)[1]
        except InputError:  # the banner says why (words): the screen shows the words alone
            return hidden
        except Exception:  # a bug: keep the page and the lesson's words
            log.exception("the screen of lesson %s failed", lesson.name)
            return hidden
        updates: dict[Any, Any] = dict(hidden)
        used = 0
        for image, picture in zip(self.stage_pictures, content.pictures, strict=False):
            value, height = self._picture(picture, lesson.stage.cell)
            updates[image] = gr.HTML(value, visible=True)
            used += height + PICTURE_CHROME_PX
        plots = [*zip(self.stage_maps, content.maps, strict=False), *zip(self.stage_figures, content.figures,
                                                                         strict=False)]
        beside = lesson.stage.beside and bool(content.maps) and chart is not None  # one row: maps and chart
        rows = bool(content.maps) + bool(content.figures) + (chart is not None) - beside
        height = max(MIN_PLOT_PX, (STAGE_PX - used) // max(1, rows) - 12)
        for plot, figure in plots:  # sized to the screen, its words big enough for the back of the room
            figure.update_layout(height=height, font={"size": 15}, title_font={"size": 20})
            updates[plot] = gr.Plot(value=figure, visible=True)
        if chart is not None:
            chart.update_layout(height=height, font={"size": 15}, title_font={"size": 20})
            updates[self.chart] = gr.Plot(value=chart, visible=True, elem_classes=["beside-maps"] if beside else [])
        return updates

    @staticmethod
    def _picture(picture: Picture, cell: int) -> tuple[str, int]:
        """A picture's images as one grid, each image upscaled by the smallest whole factor that makes
        it at least ``cell`` px, shown at its own size with its label; (the HTML, its image's height)."""
        side = max(picture.images.shape[-2:])
        image = grid(picture.entry, picture.images, nrow=picture.columns, cell_px=-(-cell // side) * side)
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        source = base64.b64encode(png.getvalue()).decode("ascii")
        height, width = image.shape[:2]
        rows = -(-len(picture.images) // picture.columns)
        return (f'<figure class="stage-picture"><figcaption>{html.escape(picture.label)}</figcaption>'
                f'<img src="data:image/png;base64,{source}" width="{width}" height="{height}" '
                f'data-columns="{picture.columns}" data-rows="{rows}" alt="{html.escape(picture.label)}"></figure>'
                ), int(height)

    def _unknown(self, name: str) -> dict[Any, Any]:
        known = ", ".join(lesson.name for lesson in LESSONS)
        return {self.banner_group: gr.Group(visible=True), self.banner: f"No lesson is called “{name[:60]}”. "
                f"The lessons: {known}.", self.chart: gr.Plot(visible=False)}
