"""The latent map panel: draw a projection of the evaluation codes, click a point or an empty spot,
and follow the traversal's code with a "you are here" marker. The map is also an instrument: a
search rings the points it names (``ui/selection.SearchView``), a click lists the point's nearest
neighbours in latent space (``ui/neighbours.NeighboursView``), a lasso or box selects points
(``ui/selection.SelectionView``), and the map can draw its density and named clusters.

A click reaches the server through the bridge in ``static/bridge.js`` (gr.Plot has no click event):
the script stores the point in ``window.__picked`` and clicks the hidden pick button, whose
listener reads it with a ``js`` function; a selection goes the same way (``window.__selected``).
The rings (search matches, neighbours) are named traces the script restyles from the hidden
``#map-overlays`` box, so a search never resends the map.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

from vaescope.contract import fill_other_groups
from vaescope.explorer.core.codes import Code, decode
from vaescope.explorer.core.dims import flattened_note, parse_page
from vaescope.explorer.core.mapfiles import default_method
from vaescope.explorer.core.maps import (
    METHOD_NAMES,
    MapView,
    add_highlights,
    color_choices,
    draw_map,
    highlights_json,
    overlay_choices,
    placeholder,
    point_code,
    points_json,
    read_click,
)
from vaescope.explorer.core.selection import Selection
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import number, whole
from vaescope.explorer.ui.common import PROGRESS, QUICK, Context, big, handler, reporter, short_name
from vaescope.explorer.ui.neighbours import DEFAULT_NEIGHBOURS, NeighboursView
from vaescope.explorer.ui.selection import SearchView, SelectionView
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_EMBEDDING_POINTS, MAX_MAP_COORDINATE, MAX_NEIGHBOURS

MAP_CONCURRENCY = 2  # projections fit on the CPU: at most two at a time, one per core
HOVER_PX = 104  # the hover thumbnail's size
PICK_HINT = "Click a point on the map to see it here and traverse from it."
CAPTION = ("**Latent map.** Each dot is one evaluation image, placed by its code: the encoder's summary of the "
           "image, squeezed from many dimensions into 2 or 3 so you can see it. Nearby dots have similar codes.")


class MapPanel:
    def __init__(self, ctx: Context, session: gr.State, traversal: Any, interpolation: Any) -> None:
        self.ctx = ctx
        self.session = session  # the gr.State holding this tab's Session
        self.traversal = traversal  # the TraversalPanel a click starts from (its marker follows the code)
        self.interpolation = interpolation  # the InterpolationPanel whose path the map redraws with itself
        # the map's own parts, each with its components and handlers
        self.selection = SelectionView(ctx, session, traversal)
        self.search = SearchView(ctx, session, self.selection)
        self.neighbours = NeighboursView(ctx, session)

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_id="map-caption", elem_classes="caption")
        with gr.Row(equal_height=True):
            self.method = gr.Dropdown([(v, k) for k, v in METHOD_NAMES.items()], value="pca", label="Projection",
                                      elem_id="map-method", min_width=110)
            self.dims = gr.Dropdown([("2D", 2), ("3D", 3)], value=2, label="Dims", elem_id="map-dims", min_width=80)
            self.color = gr.Dropdown([("class", "class")], value="class", label="Colour by", elem_id="map-color",
                                     min_width=140)
            self.overlay = gr.Dropdown([("none", "none")], value="none", label="Overlay", elem_id="map-overlay",
                                       min_width=140)
            self.max_points = gr.Number(0, precision=0, minimum=0, label="Max points (0 = all)",
                                        elem_id="map-max-points", min_width=100)
            self.draw_btn = gr.Button("Draw", variant="primary", elem_id="map-draw-btn", min_width=70, scale=0)
        self.plot = gr.Plot(label="Latent map (click a point; lasso or box to select)", elem_id="latent-map")
        self.info = gr.Markdown("", elem_id="map-info")
        self.rings = gr.Textbox(visible="hidden", elem_id="map-overlays")  # {"ring name": [[x, y], ...]}
        with gr.Row(equal_height=True, elem_id="map-search-row"):
            self.search.build(self.rings)
            self.structure = gr.Checkbox(False, label="Density & clusters", elem_id="map-structure", min_width=170,
                                         container=False, scale=1)
        self.search.build_note()
        self.pick_data = gr.Textbox(visible="hidden", elem_id="pick-data")
        self.pick_btn = gr.Button("pick", visible="hidden", elem_id="pick-btn")
        # the thumbnail that follows the pointer over the map (positioned by static/bridge.js)
        self.hover_data = gr.Textbox(visible="hidden", elem_id="hover-data")
        self.hover_btn = gr.Button("hover", visible="hidden", elem_id="hover-btn")
        self.hover_image = gr.Image(format="png", interactive=False, show_label=False, container=False, buttons=[],
                                    elem_id="hover-thumb", elem_classes="pixelated")
        with gr.Row(equal_height=False, elem_id="picked-row"):
            self.picked_original = gr.Image(label="Picked: original", format="png", height=150, width=150,
                                            interactive=False, elem_id="picked-original", elem_classes="pixelated",
                                            min_width=150, scale=0, buttons=[])
            self.picked_recon = gr.Image(label="Reconstruction", format="png", height=150, width=150,
                                         interactive=False, elem_id="picked-recon", elem_classes="pixelated",
                                         min_width=150, scale=0, buttons=[])
            self.picked_info = gr.Markdown(PICK_HINT, elem_id="picked-info")
        self.neighbours.build(self.rings)
        self.selection.build()

    # -- the model changed --
    def model_outputs(self) -> list[Any]:
        return [self.method, self.color, self.overlay, self.plot, self.info, self.picked_original, self.picked_recon,
                self.picked_info, self.rings, *self.search.outputs(), *self.neighbours.outputs(),
                *self.selection.outputs(), *self.selection.decoder_buttons()]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        colors = color_choices(entry)
        return {self.method: default_method(entry), self.color: gr.Dropdown(choices=colors, value=colors[0][1]),
                self.overlay: gr.Dropdown(choices=overlay_choices(entry), value="none"),
                self.plot: placeholder(entry), self.info: "", self.picked_original: None, self.picked_recon: None,
                self.picked_info: PICK_HINT, self.rings: highlights_json(None, {}),
                **self.search.on_model(), **self.neighbours.cleared(), **self.selection.on_model(entry)}

    def last_selection(self) -> Selection | None:
        """The points selected last on this app's map, in any session (None: none, or cleared)."""
        return self.selection.last()

    # -- events --
    def draw_inputs(self) -> list[Any]:
        return [self.method, self.dims, self.color, self.overlay, self.max_points, self.traversal.page, self.session,
                self.structure]

    def draw_outputs(self) -> list[Any]:
        # the overlay boxes go with every drawing, so the page never lays an older trail over a new map
        return [self.plot, self.info, self.traversal.marker, self.interpolation.path_json, self.rings]

    def wire(self, after_load: list[Any]) -> None:
        inputs, outputs = self.draw_inputs(), self.draw_outputs()
        heavy = {"concurrency_id": "map", "concurrency_limit": MAP_CONCURRENCY, "show_progress_on": [self.plot]}
        for i, event in enumerate(after_load):  # draw the map once a model has loaded
            event.success(self.draw_map, inputs, outputs, api_name=f"map_after_load_{i}",
                          api_visibility="private", **heavy)
        gr.on([self.draw_btn.click, self.method.select, self.dims.select, self.color.select, self.overlay.select,
               self.traversal.page.select,  # a hierarchical model: the map shows the chosen layer
               self.structure.input],
              self.draw_map, inputs, outputs, api_name="draw_map", **heavy)
        pick_out = [self.picked_original, self.picked_recon, self.picked_info, *self.traversal.start_outputs(),
                    *self.neighbours.outputs(), self.rings]
        self.pick_btn.click(self.pick, [self.pick_data, self.session, self.neighbours.count], pick_out,
                            js="(payload, session, count) => [window.__picked, session, count]", api_name="pick",
                            trigger_mode="always_last", **QUICK)  # a click while one is pending is kept
        self.search.wire()
        self.neighbours.wire()
        self.selection.wire()
        self.hover_btn.click(self.hover, [self.hover_data, self.session], [self.hover_image],
                             js="(payload, session) => [window.__hover, session]", api_name="hover_thumbnail",
                             queue=False, trigger_mode="always_last", **QUICK)

    @handler
    def draw_map(self, method: str, dims: int, color_by: str, overlay: str, max_points: float | None,
                 page: Any, session: Session, structure: bool = False,
                 progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        if not entry.has_points:
            return {self.plot: placeholder(entry), self.info: ""}
        limit = whole(max_points, "Max points (0 for all)", 0, MAX_EMBEDDING_POINTS, default=0)
        group = parse_page(page, entry)[0] if len(entry.description.latent_groups) > 1 else None
        structure = structure is True
        view, figure = draw_map(entry, self.ctx.projections, method, int(dims), color_by, overlay, max_points=limit,
                                group=group, path=session.path, marker=session.trail, structure=structure,
                                progress=reporter(progress))
        add_highlights(figure, view, session.highlights)  # a search's matches stay ringed on every map
        session.update(version, view=view)
        clickable = "; click empty space to decode that spot" if view.projection.invertible and int(dims) == 2 \
            and entry.generator is not None else ""
        flat = " (density and clusters are drawn on 2D maps)" if structure and view.projection.dims != 2 else ""
        items = "images" if entry.latents.images is not None else "codes"
        click = "inspect and traverse it" if entry.generator is not None else "list its nearest neighbours"
        info = (f"**{short_name(entry)}** · {len(view.indices):,} of {len(entry.latents):,} {items}. Click a point to "
                f"{click}{clickable}; lasso or box-select points to summarize them{flat}."
                + flattened_note(entry.description))
        return {self.plot: figure, self.info: info, self.traversal.marker: points_json(view, session.trail),
                self.interpolation.path_json: points_json(view, session.path),
                self.rings: highlights_json(view, session.highlights)}

    @handler
    def pick(self, payload: str | None, session: Session, count: Any = DEFAULT_NEIGHBOURS) -> dict[Any, Any]:
        """A click on the map: a point (its image), or a spot of a 2D PCA map (the PCA inverse); either
        way with its ``count`` nearest neighbours in latent space."""
        version, entry = self.ctx.current(session)
        view, data = session.view, read_click(payload)
        if data is None or view is None or view.key != entry.key:
            return {}
        k = whole(count, "Nearest neighbours", 1, MAX_NEIGHBOURS, default=DEFAULT_NEIGHBOURS)
        if data.get("kind") == "point":
            code = point_code(entry, data.get("index"))
            info = f"**{short_name(entry)}** · {code.source[0].upper()}{code.source[1:]}"
            if entry.generator is None:  # precomputed codes: the item itself, nothing to decode
                session.update(version, picked=code)
                return {self.picked_original: None if code.image is None else big(entry, code.image, 150),
                        self.picked_recon: None, self.picked_info: info + " · no decoder: nothing to reconstruct",
                        **self.neighbours.show(entry, code, session, version, k)}
        elif entry.generator is None:
            return {}
        elif view.projection.invertible and view.projection.dims == 2:
            x, y = _number(data.get("x")), _number(data.get("y"))
            current = session.code if session.code is not None and session.code.key == entry.key else None
            z = place_on_map(entry, view, np.array([x, y], np.float32), current)
            code = Code(entry.key, z, z, current.y if current is not None else None,
                        f"the map spot ({x:.2f}, {y:.2f})")
            info = f"**{short_name(entry)}** · decoded the map spot ({x:.2f}, {y:.2f}) (PCA inverse)"
        else:
            gr.Info("Clicking empty space decodes a spot only on 2D PCA maps (PCA can be inverted).")
            return {}
        recon = decode(entry, code.z, code.y)[0]
        updates = {self.picked_original: None if code.image is None else big(entry, code.image, 150),
                   self.picked_recon: big(entry, recon, 150), self.picked_info: info}
        session.update(version, picked=code)
        return updates | self.neighbours.show(entry, code, session, version, k) | \
            self.traversal.start(entry, code, session, version)

    def hover(self, payload: str | None, session: Session) -> Any:
        """The thumbnail of the image under the pointer (an unqueued event: one small PNG)."""
        entry = self.ctx.store.peek(session.key)
        try:
            i = int(str(payload or "")[:12])
        except ValueError:
            return gr.skip()
        if entry is None or not entry.has_points or entry.latents.images is None or not 0 <= i < len(entry.latents):
            return gr.skip()  # codes without images have no thumbnail (the page shows no empty box)
        return big(entry, entry.latents.image(i), HOVER_PX)


def place_on_map(entry: ModelEntry, view: MapView, xy: np.ndarray, current: Code | None) -> np.ndarray:
    """The code [D] under a spot of an invertible (PCA) map: the map's slice from the inverse, the
    rest of the code from the current one (a hierarchical model then fills its other layers)."""
    spot = view.projection.inverse_transform(xy[None])[0]
    if view.group is None:
        return spot
    z = (current.z.copy() if current is not None else entry.latents.mean.mean(0)).astype(np.float32)
    z[view.group.start:view.group.start + view.group.size] = spot
    with torch.inference_mode():
        filled = fill_other_groups(entry.model, torch.from_numpy(z[None]).to(entry.model.device), view.group.name)
    return filled[0].float().cpu().numpy()


def _number(value: Any) -> float:
    return number(value, "A map spot's coordinate", -MAX_MAP_COORDINATE, MAX_MAP_COORDINATE)
