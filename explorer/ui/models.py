"""The model panel: choose a model (a listed checkpoint, an upload, a model handed to vs.explore),
see its card, and switch every other panel to it in one response.

A switch is the only event that changes the session's model. It first marks everything in flight
as stale (``Session.begin_switch``), loads, then installs the model and asks every panel for its
updates (``on_model``), so nothing of the previous model stays on the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from vaescope.errors import InputError
from vaescope.explorer.core.cards import data_note, model_card
from vaescope.explorer.core.checkpoints import choose_default
from vaescope.explorer.core.store import ModelEntry, ModelStore
from vaescope.explorer.ui.common import PROGRESS, QUICK, Context, Panel, as_response, log, reporter
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

LOAD_CONCURRENCY = 2  # switches and uploads at once
PAGE_CONCURRENCY = 8  # page loads at once (mostly a model already in memory)
PRESENT_JS = ("(on) => { document.body.classList.toggle('present', !!on); "
              "window.vaescopeResizePlots && window.vaescopeResizePlots(); }")
URL_PRESENT_JS = "() => new URLSearchParams(window.location.search).get('present') === '1'"
# the page's address holds the view (static/page.js keeps it current); the button copies it
COPY_LINK_JS = "() => { window.vaescopeCopyLink && window.vaescopeCopyLink(); }"
UrlView = Callable[[Mapping[str, str], ModelEntry], dict[Any, Any]]


def first_model(store: ModelStore, default: str | None, names: list[str]) -> str | None:
    """The model a page opens with: the operator's ``default`` when listed, else a model handed to
    vs.explore, else the folder's showcase choice (``choose_default``), else the first name."""
    if default in names:
        return default
    if store.root is not None:
        folder = [n for n in names if (store.root / n).is_file()]
        memory = [n for n in names if n not in folder]
        return memory[0] if memory else choose_default(store.root, folder)
    return names[0] if names else None


class ModelsPanel:
    def __init__(self, ctx: Context, session: gr.State, panels: list[Panel], default: str | None,
                 max_upload_mb: int, url_choice: Callable[[Mapping[str, str]], str | None] = lambda params: None,
                 url_view: tuple[Callable[[], list[Any]], UrlView] | None = None) -> None:
        self.ctx = ctx
        self.session = session
        self.panels = panels
        self.default = default
        self.max_upload_mb = max_upload_mb
        # the model a page's own link asks for (``?lesson=NAME`` of a one-model lesson, ``?model=NAME``),
        # which a page load opens instead of the default: the page never shows one model under words
        # about another
        self.url_choice = url_choice
        # what else of a link's view a page load restores once its model is in: (the components it
        # may set, the function that reads the link for them), e.g. the map's projection and colouring
        self.url_view = url_view

    def build(self) -> None:
        names = self.ctx.store.names()
        where = f"Model ({self.ctx.store.root})" if self.ctx.store.root is not None else "Model"
        with gr.Row(equal_height=True, elem_id="model-choice-row"):
            self.dropdown = gr.Dropdown(choices=names, value=self._first(names), label=where,
                                        elem_id="checkpoint-dropdown", interactive=True, scale=4)
            with gr.Column(scale=1, min_width=150):
                self.refresh = gr.Button("↻ Refresh list", size="sm", elem_id="checkpoint-refresh")
                self.upload = gr.UploadButton("⇪ Upload .safetensors", file_types=[".safetensors"], size="sm",
                                              elem_id="checkpoint-upload")
        # The caps are stated where uploads start; ExplorerBlocks.launch enforces the first
        # (Gradio's max_file_size), prepare_image the others.
        gr.Markdown(f"<small>Uploads: up to {self.max_upload_mb} MB per file; images up to "
                    f"{MAX_IMAGE_BYTES // 2**20} MB and {MAX_IMAGE_PIXELS // 10**6} megapixels.</small>",
                    elem_id="upload-cap")

    def build_toolbar(self) -> None:
        """The page's own controls, above every tab: the presenter layout and a link to this view."""
        with gr.Row(elem_id="page-toolbar", equal_height=True):
            self.present = gr.Checkbox(False, label="Presenter layout", elem_id="present-toggle", container=False,
                                       scale=0, min_width=0)
            self.copy_link = gr.Button("Copy link", size="sm", elem_id="copy-link-btn", scale=0, min_width=0)

    def build_card(self) -> None:
        self.card = gr.Markdown("Loading…", elem_id="model-card")
        self.note = gr.Markdown("", elem_id="data-note")

    def _first(self, names: list[str]) -> str | None:
        return first_model(self.ctx.store, self.default, names)

    def outputs(self) -> list[Any]:
        """Everything a switch updates: the dropdown, the card, the note and every panel's outputs."""
        found = [self.dropdown, self.card, self.note]
        for panel in self.panels:
            found += [c for c in panel.model_outputs() if c not in found]
        return found

    def wire(self, demo: gr.Blocks) -> list[Any]:
        """Wire the load events; returns them, so the map can draw after each."""
        loading = {"concurrency_id": "load", "concurrency_limit": LOAD_CONCURRENCY, "show_progress_on": [self.card]}
        # Page loads have their own slots: a visitor's page never queues behind other visitors'
        # switches and uploads (a slow file holds a "load" slot, never a page's). The store's
        # single flight still loads each file once, and every graph a file brings runs under a time
        # budget (vaescope.limits.GRAPH_RUN_SECONDS), so no slot is held for long.
        opening = {"concurrency_id": "page", "concurrency_limit": PAGE_CONCURRENCY, "show_progress_on": [self.card]}
        out = self.outputs()
        page_out = out + [c for c in (self.url_view[0]() if self.url_view else []) if c not in out]
        events = [
            demo.load(self.page_load, [self.dropdown, self.session], page_out, api_name="page_load", **opening),
            self.dropdown.select(self.load_checkpoint, [self.dropdown, self.session], out,
                                 api_name="load_checkpoint", **loading),
            self.upload.upload(self.upload_checkpoint, [self.upload, self.session], out,
                               api_name="upload_checkpoint", **loading),
        ]
        self.refresh.click(self.refresh_list, [self.dropdown], [self.dropdown], api_name="list_checkpoints", **QUICK)
        # The presenter layout is a page class (static/style.css): no server round trip. A link with
        # ?present=1 opens in it.
        self.present.change(None, [self.present], None, js=PRESENT_JS)
        demo.load(None, None, [self.present], js=URL_PRESENT_JS)
        self.copy_link.click(None, None, None, js=COPY_LINK_JS)
        return events

    # -- handlers --
    def refresh_list(self, current: str | None) -> Any:
        names = self.ctx.store.names()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def page_load(self, current: str | None, session: Session, request: gr.Request,
                  progress: gr.Progress = PROGRESS) -> Any:
        """Open the default model (or the one the page's link asks for, or the next one that loads)
        when a page opens."""
        params = dict(request.query_params) if request is not None else {}
        updates = self._page_load(self.url_choice(params) or current, session, progress)
        entry = self.ctx.store.peek(session.key)
        if self.url_view is not None and entry is not None and self.card in updates:  # it loaded
            updates |= self.url_view[1](params, entry)
        return as_response(updates)

    def load_checkpoint(self, name: str | None, session: Session, progress: gr.Progress = PROGRESS) -> Any:
        """Switch to a model chosen in the list."""
        return as_response(self._load_checkpoint(name, session, progress))

    def upload_checkpoint(self, path: str | None, session: Session, progress: gr.Progress = PROGRESS) -> Any:
        """Switch to an uploaded checkpoint."""
        return as_response(self._upload_checkpoint(path, session, progress))

    def _page_load(self, current: str | None, session: Session, progress: gr.Progress) -> dict[Any, Any]:
        names = self.ctx.store.names()
        if not names:
            return self._failed("No models here: no .safetensors checkpoints in "
                                f"{self.ctx.store.root}. Train one with latent-train, or upload a checkpoint.",
                                session, choices=[])
        first = current if current in names else self._first(names)
        problems = []
        for name in [first, *(n for n in names if n != first)]:
            out = self._switch(session, lambda n=name: self.ctx.store.open_name(n, reporter(progress)),
                               gr.Dropdown(choices=names, value=name), problems)
            if out is not None:
                if problems:
                    out[self.note] = f"⚠️ Skipped: {'; '.join(problems)}\n\n{out[self.note]}"
                return out
        return self._failed(f"No model could be loaded: {'; '.join(problems)}", session, choices=names)

    def _load_checkpoint(self, name: str | None, session: Session, progress: gr.Progress) -> dict[Any, Any]:
        if not name:
            return self._failed("Choose a model.", session)
        problems: list[str] = []
        out = self._switch(session, lambda: self.ctx.store.open_name(name, reporter(progress)), gr.skip(), problems)
        return out if out is not None else self._failed(f"Cannot load {name} — {problems[0]}", session)

    def _upload_checkpoint(self, path: str | None, session: Session, progress: gr.Progress) -> dict[Any, Any]:
        if not path:
            return self._failed("No file arrived.", session)
        name = f"uploaded: {Path(path).name}"
        problems: list[str] = []
        out = self._switch(session, lambda: self.ctx.store.open_path(Path(path), name, reporter(progress)),
                           gr.Dropdown(value=None), problems)
        if out is None:
            return self._failed(f"Cannot load the uploaded checkpoint — {problems[0]}", session)
        return out

    def _switch(self, session: Session, open_model: Callable[[], ModelEntry], dropdown: Any,
                problems: list[str]) -> dict[Any, Any] | None:
        """Load a model and switch the whole page to it; None (with the reason in ``problems``) if
        it cannot be loaded, {} if a later switch superseded this one."""
        claimed = session.begin_switch()
        try:
            entry = open_model()
            version = session.finish_switch(claimed, entry.key)
            if version is None:
                return {}
            updates: dict[Any, Any] = {self.dropdown: dropdown, self.card: model_card(entry),
                                       self.note: data_note(entry)}
            for panel in self.panels:
                updates |= panel.on_model(entry, session)
        except InputError as exc:
            problems.append(str(exc))
            return None
        except Exception as exc:  # a bug, or a file that breaks something unforeseen: say so, keep serving
            log.exception("opening a model failed")
            problems.append(f"{type(exc).__name__}: {exc} (the server log has the details)")
            return None
        if entry.data_note:
            gr.Warning(f"{entry.data_note}. The map and evaluation images are unavailable; traversal, "
                       f"sampling and interpolation of uploaded images still work.")
        return updates

    def _failed(self, message: str, session: Session, choices: list[str] | None = None) -> dict[Any, Any]:
        """A load that did not happen: warn, keep the current model, name it in the dropdown again."""
        gr.Warning(message)
        current = None
        entry = self.ctx.store.peek(session.key)
        if entry is not None:
            current = entry.name
        names = choices if choices is not None else self.ctx.store.names()
        if current not in names:
            current = None  # an uploaded model has no entry in the list
        dropdown = gr.Dropdown(value=current) if choices is None else gr.Dropdown(choices=choices, value=current)
        return {self.dropdown: dropdown, self.note: f"⚠️ {message}"}

