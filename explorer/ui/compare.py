"""The side-by-side view: two models on the same evaluation images, one projection method, linked
clicks (a click on either map shows that image in both), and every request answered by both sides.

It is two instances of one panel (``ui/side.SidePanel``: a model, its map, its reconstruction and
answers) and one ``ActionBar``: what the sides share (the projection, colouring and overlay, the
click bridge, the picked image, the buttons). The bar asks each side for each action; what an
action computes is one core function (``core.compare.answer``). ``CompareView`` lays the three out
in the tab and, the first time the tab is shown, opens two sensible models
(``core.compare.default_pair``), so no button is ever pressed with nothing to answer it.

Every handler takes the tab's ``SessionPair``; the handler wrapper drops an answer computed while
either side changed models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from vaescope.errors import InputError
from vaescope.explorer.core.codes import item_noun
from vaescope.explorer.core.compare import ACTIONS, Answer, answer, default_pair
from vaescope.explorer.core.maps import METHOD_NAMES, color_choices, point_code, read_click
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.ui.common import PROGRESS, QUICK, Context, big, handler
from vaescope.explorer.ui.map import MAP_CONCURRENCY
from vaescope.explorer.ui.models import first_model
from vaescope.explorer.ui.side import PICK_PX, SidePanel
from vaescope.explorer.ui.state import SessionPair

SIDES = ("a", "b")
COLOURS = [("class", "class"), ("mixture component", "component"), ("reconstruction error", "recon"),
           ("KL per image", "kl")]
OVERLAYS = [("none", "none"), ("prior samples", "prior")]
CAPTION = ("**Side by side.** Two models on the same test images. Click a point on either map: the image is shown "
           "through both models. Hover a point: the same image is ringed on the other map. The buttons below "
           "answer on both sides at once.")
PICK_HINT = "Click a point on either map."
HEAVY = {"concurrency_id": "map", "concurrency_limit": MAP_CONCURRENCY}


class ActionBar:
    """What both sides share, and every request that both answer."""

    def __init__(self, ctx: Context, pair: gr.State, sides: Sequence[SidePanel]) -> None:
        self.ctx = ctx
        self.pair = pair
        self.sides = {side.side: side for side in sides}

    # -- layout: pieces the view places around the sides --
    def build_settings(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption", elem_id="compare-caption")
        with gr.Row(equal_height=True):
            self.method = gr.Dropdown([(v, k) for k, v in METHOD_NAMES.items()], value="pca", label="Projection",
                                      elem_id="compare-method", min_width=110)
            self.color = gr.Dropdown(COLOURS, value="class", label="Colour by", elem_id="compare-color",
                                     allow_custom_value=True, min_width=140)
            self.overlay = gr.Dropdown(OVERLAYS, value="none", label="Overlay", elem_id="compare-overlay",
                                       min_width=140)
            self.draw_btn = gr.Button("Draw both", variant="primary", elem_id="compare-draw-btn", scale=0,
                                      min_width=90)
        # the page script puts a click on either map here and presses the button (static/bridge.js)
        self.pick_data = gr.Textbox(visible="hidden", elem_id="compare-pick-data")
        self.pick_btn = gr.Button("pick", visible="hidden", elem_id="compare-pick-btn")

    def build_original(self) -> None:
        self.original = gr.Image(label="Picked image", format="png", interactive=False, height=PICK_PX, width=PICK_PX,
                                 elem_id="compare-original", elem_classes="pixelated", min_width=PICK_PX, scale=0,
                                 buttons=[])

    def build_picked_info(self) -> None:
        self.picked_info = gr.Markdown(PICK_HINT, elem_id="compare-picked-info")

    def build_buttons(self) -> None:
        with gr.Row():
            self.buttons = {kind: gr.Button(label, size="sm", elem_id=f"compare-{kind}-btn")
                            for kind, label in ACTIONS.items()}

    def settings(self) -> list[Any]:
        """The inputs every drawing reads: projection, colouring, overlay."""
        return [self.method, self.color, self.overlay]

    def draw_outputs(self) -> list[Any]:
        """What drawing both maps updates: each side's map, info and overlays, and the colourings offered."""
        return [*(c for side in self.sides.values() for c in side.map_outputs()), self.color]

    def pick_outputs(self) -> list[Any]:
        return [self.original, *(side.recon for side in self.sides.values()), self.picked_info,
                *(side.overlays for side in self.sides.values())]

    def answer_outputs(self) -> list[Any]:
        return [c for side in self.sides.values() for c in side.answer_outputs()]

    # -- events --
    def wire(self, loads: dict[str, Any]) -> None:
        """Wire the shared controls; ``loads``: each side's load event, after which its map is drawn."""
        inputs = [*self.settings(), self.pair]
        for name, load in loads.items():
            load.success(self.drawer(name), inputs, [*self.sides[name].map_outputs(), self.color],
                         api_name=f"compare_draw_after_load_{name}", api_visibility="private", **HEAVY)
        gr.on([self.draw_btn.click, self.method.select, self.color.select, self.overlay.select], self.draw_both,
              inputs, self.draw_outputs(), api_name="compare_draw", **HEAVY)
        self.pick_btn.click(self.pick, [self.pick_data, self.pair], self.pick_outputs(),
                            js="(payload, pair) => [window.__comparePicked, pair]", api_name="compare_pick",
                            trigger_mode="always_last", **QUICK)
        results = [side.result for side in self.sides.values()]
        for kind, button in self.buttons.items():
            button.click(self.actor(kind), [self.pair], self.answer_outputs(), api_name=f"compare_{kind}",
                         show_progress_on=results)

    # -- handlers --
    def drawer(self, name: str) -> Callable[..., Any]:
        @handler
        def draw_side(method: str, color_by: str, overlay: str, pair: SessionPair,
                      progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
            return self._draw([name], method, color_by, overlay, pair, progress, only_missing=True)
        return draw_side

    @handler
    def draw_both(self, method: str, color_by: str, overlay: str, pair: SessionPair,
                  progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
        """Both maps (a side without a model is left as it is)."""
        return self._draw(SIDES, method, color_by, overlay, pair, progress)

    @handler
    def draw_missing(self, method: str, color_by: str, overlay: str, pair: SessionPair,
                     progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
        """The maps of the sides whose model is not drawn yet."""
        return self._draw(SIDES, method, color_by, overlay, pair, progress, only_missing=True)

    def _draw(self, names: Sequence[str], method: str, color_by: str, overlay: str, pair: SessionPair,
              progress: Any = None, only_missing: bool = False) -> dict[Any, Any]:
        updates: dict[Any, Any] = {}
        for name in names:
            session = pair.side(name)
            drawn = session.view is not None and session.view.key == session.key
            if session.key is not None and not (only_missing and drawn):
                updates |= self.sides[name].draw(method, color_by, overlay, pair, progress)
        if updates:
            updates[self.color] = gr.Dropdown(choices=self._colourings(pair))
        return updates

    def _colourings(self, pair: SessionPair) -> list[tuple[str, str]]:
        """The colourings either model offers (each map falls back to its first where it lacks one)."""
        found: list[tuple[str, str]] = []
        for name in SIDES:
            key = pair.side(name).key
            entry = self.ctx.store.peek(key) if key is not None else None
            for choice in color_choices(entry) if entry is not None else []:
                if choice not in found:
                    found.append(choice)
        return found or COLOURS

    @handler
    def pick(self, payload: str | None, pair: SessionPair) -> dict[Any, Any]:
        """A click on either map (the page script's JSON): the image, through both models."""
        data = read_click(payload)
        if data is None or data.get("kind") != "point" or data.get("side") not in SIDES:
            return {}
        return self.pick_index(str(data["side"]), data.get("index"), pair)

    def pick_index(self, side: str, index: Any, pair: SessionPair) -> dict[Any, Any]:
        """Evaluation image ``index`` of side ``side``'s model picked: shown, and through both models.
        {} when that side has no model; InputError when the index names none of its images."""
        clicked = self.sides[side].entry(pair)
        if clicked is None:
            return {}
        i = point_code(clicked, index).index
        assert i is not None
        picks = pair.pick(i)
        updates: dict[Any, Any] = {self.original: big(clicked, clicked.latents.image(i), PICK_PX)}
        lines = [f"**Test {item_noun(clicked)} #{i}**" + _class_words(clicked, i)]
        for panel in self.sides.values():
            shown, line = panel.show_pick(i, clicked, pair)
            updates |= shown
            lines += [line] if line else []
        if len(picks) == 2:
            lines.append(f"Last two picks: #{picks[0]} → #{picks[1]} (what *Interpolate* joins).")
        updates[self.picked_info] = "  \n".join(lines)
        return updates

    def actor(self, kind: str) -> Callable[..., Any]:
        @handler
        def act(pair: SessionPair, progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
            return self.act([kind], pair)
        act.__name__ = f"compare_{kind}"
        return act

    def act(self, kinds: Sequence[str], pair: SessionPair) -> dict[Any, Any]:
        """Actions ``kinds`` (a button: one; a lesson: several), answered on both sides; a side
        without a model says what to choose, a side that cannot answer says why."""
        updates: dict[Any, Any] = {}
        for panel in self.sides.values():
            entry = panel.entry(pair)
            answers = [] if entry is None else [_answer(kind, entry, pair.picks) for kind in kinds]
            updates |= panel.show(answers, pair)
        return updates


class CompareView:
    """The Side by side tab: two ``SidePanel`` and one ``ActionBar`` on one ``SessionPair``."""

    def __init__(self, ctx: Context, default: str | None = None, preferred: Sequence[Sequence[str]] = ()) -> None:
        self.ctx = ctx
        self.default = default  # the Explore page's default model (--default), for the opening pair
        self.preferred = preferred  # pairs to open with when listed (the side-by-side lessons' models)
        self.pair = gr.State(SessionPair())  # a value: Gradio deep-copies it once per browser tab
        self.sides = {name: SidePanel(ctx, self.pair, name) for name in SIDES}
        self.bar = ActionBar(ctx, self.pair, list(self.sides.values()))

    def build(self) -> None:
        names = self.ctx.store.names()
        chosen = default_pair(names, self.preferred, lambda: first_model(self.ctx.store, self.default, names))
        self.bar.build_settings()
        with gr.Row(equal_height=False):
            for side, name in zip(self.sides.values(), chosen, strict=True):
                side.build_map(names, name)
        with gr.Row(equal_height=False):
            self.bar.build_original()
            for side in self.sides.values():
                side.build_recon()
            self.bar.build_picked_info()
        self.bar.build_buttons()
        with gr.Row(equal_height=False):
            for side in self.sides.values():
                side.build_result()

    def wire(self, tab: gr.Tab) -> None:
        """Each side's model list, the bar, and the tab's first showing: each side without a model
        loads the one its list names (the defaults), then the maps not yet drawn are drawn. Nothing
        runs before the tab is shown, so the Explore page's first load never waits for it."""
        self.bar.wire({name: side.wire() for name, side in self.sides.items()})
        step = None
        for name, side in self.sides.items():
            load = dict(fn=side.load_if_empty, inputs=[side.model, self.pair], outputs=side.load_outputs(),
                        api_name=f"compare_open_{name}", api_visibility="private", concurrency_id="load",
                        concurrency_limit=2, show_progress_on=[side.plot])
            step = tab.select(**load) if step is None else step.then(**load)
        step.then(self.bar.draw_missing, [*self.bar.settings(), self.pair], self.bar.draw_outputs(),
                  api_name="compare_open_draw", api_visibility="private", **HEAVY)


def _answer(kind: str, entry: ModelEntry, picks: Sequence[int]) -> Answer | str:
    """``core.compare.answer``, or the reason this model cannot answer, in words."""
    try:
        return answer(kind, entry, list(picks))
    except InputError as exc:
        return str(exc)


def _class_words(entry: ModelEntry, index: int) -> str:
    label = int(entry.latents.labels[index])
    return f" (class {entry.description.class_name(label)})" if label >= 0 else ""
