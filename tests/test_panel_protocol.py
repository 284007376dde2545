"""The page is assembled by protocol: every panel is built, then wired, and no panel (nor the app)
sets another panel's attributes; dependencies go in through constructors or ``wire`` arguments.
Checked on the source (AST), so a new ``other.attr = ...`` fails here before it confuses a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[1] / "explorer" / "ui"
PANEL_SUFFIXES = ("Panel", "View", "Bar")  # the classes the page is assembled from


def foreign_assignments(source: str) -> list[str]:
    """Each ``x.attr = ...`` (or ``+=``, annotated, ``setattr(x, ...)``) whose ``x`` is not the
    function's own ``self``: an argument (a panel passed in), an attribute of self (``self.map.box``),
    or a name bound to a panel's constructor (``latent_map = MapPanel(...)``). Setting an attribute
    of a local function (``fn.__name__``) or of the Blocks (``demo.ctx``) is not a panel's."""
    tree = ast.parse(source)
    panels = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and isinstance(node.value.func, ast.Name) and node.value.func.id.endswith(PANEL_SUFFIXES)
              for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)):
        params = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]} - {"self", "cls"}
        for node in ast.walk(fn):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                    and node.args and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "self"):
                found.append(f"line {node.lineno}: setattr({ast.unparse(node.args[0])}, ...)")
            for target in (t for group in targets for t in (group.elts if isinstance(group, ast.Tuple) else [group])):
                if not isinstance(target, ast.Attribute):
                    continue
                owner = target.value
                foreign = (isinstance(owner, ast.Attribute)  # self.other.attr, a.b.c
                           or (isinstance(owner, ast.Name) and (owner.id in params or owner.id in panels)))
                if foreign:
                    found.append(f"line {node.lineno}: {ast.unparse(target)} = ...")
    return sorted(set(found))


@pytest.mark.parametrize("module", sorted(p.name for p in UI.glob("*.py")))
def test_no_panel_sets_another_panels_attributes(module: str) -> None:
    assert foreign_assignments((UI / module).read_text()) == []


def test_the_check_finds_what_it_forbids() -> None:
    """The wiring this replaced, and the other shapes of the same mistake, are all found."""
    before = '''
def build_app(ctx):
    latent_map = MapPanel(ctx)
    lessons = LessonsPanel(ctx)
    latent_map.path_box = interpolation.path_json
    lessons.top_tabs, lessons.models = top_tabs, models

class MapPanel:
    def wire(self, traversal):
        traversal.map = self
        self.traversal.marker = None
        self.count += 1
        setattr(traversal, "x", 1)

def fine(self):
    def act(): ...
    act.__name__ = "x"
    self.plot = None
'''
    assert foreign_assignments(before) == [
        "line 10: traversal.map = ...", "line 11: self.traversal.marker = ...", "line 13: setattr(traversal, ...)",
        "line 5: latent_map.path_box = ...", "line 6: lessons.models = ...", "line 6: lessons.top_tabs = ..."]


def test_the_side_by_side_view_is_two_instances_of_one_side_and_one_bar(tiny_checkpoint_dir: Path) -> None:
    from vaescope.explorer.ui.app import build_app
    from vaescope.explorer.ui.compare import ActionBar
    from vaescope.explorer.ui.side import SidePanel

    view = build_app(tiny_checkpoint_dir, device="cpu").panels["compare"]
    assert [type(side) for side in view.sides.values()] == [SidePanel, SidePanel] and type(view.bar) is ActionBar
    a, b = view.sides.values()
    assert a.model.elem_id == "compare-model-a" and b.model.elem_id == "compare-model-b"
