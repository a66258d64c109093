"""Plain-text rendering: the level hierarchy as a tree (fastest clock first), then a table of levels.

The output is deterministic for a given document: a fixed width of 100 columns, no colour unless asked
for, and no markup interpretation of names, types or labels (they are passed to rich as Text objects).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from nldsl.render.doc import GraphDoc, Level, Tier, human_count, load, plural
from nldsl.stats import training_values

WIDTH = 100
EDGE_ARROWS = {"flow": "<-", "teach": "<=", "meta": "<~"}


def render_text(doc: Mapping[str, Any], *, color: bool = False, width: int = WIDTH) -> str:
    """Render a level-graph document as a tree and a table. ``color`` adds ANSI styles."""
    from rich.console import Console

    graph = load(doc)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
        soft_wrap=False,
        _environ={},  # ignore COLUMNS, NO_COLOR, FORCE_COLOR, TERM...: same text everywhere
    )
    console.print(_tree(graph))
    console.print()
    console.print(_table(graph))
    # rich pads lines to the console width; trailing blanks carry nothing
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def _tree(graph: GraphDoc) -> Any:
    from rich.text import Text
    from rich.tree import Tree

    title = Text(graph.model or "(unnamed model)", style="bold")
    if graph.source:
        title.append(f"  {graph.source}", style="dim")
    title.append(f"  [{_summary(graph)}]", style="dim")
    root = Tree(title, guide_style="dim")
    for tier in graph.tiers:
        branch = root.add(_tier_label(tier))
        for level in tier.levels:
            node = branch.add(_level_label(level, tier))
            for edge in graph.incoming(level.name):
                line = Text(f"{edge.kind} {EDGE_ARROWS[edge.kind]} ", style="dim")
                line.append(edge.src, style="cyan")
                if edge.label:
                    line.append(f": {edge.label}")
                node.add(line)
    return root


def _summary(graph: GraphDoc) -> str:
    return ", ".join(
        [
            plural(len(graph.levels), "level"),
            plural(len(graph.edges), "edge"),
            plural(graph.errors, "error"),
            plural(graph.warnings, "warning"),
        ]
    )


def _tier_label(tier: Tier) -> Any:
    from rich.text import Text

    label = Text(tier.label, style="bold magenta")
    label.append(f"  (tier {tier.index})", style="dim")
    return label


def _level_label(level: Level, tier: Tier) -> Any:
    from rich.text import Text

    label = Text(level.name, style="bold cyan")
    label.append(f"  {level.kind}", style="yellow")
    if level.clock.text != tier.label:
        label.append(f"  ({level.clock.text})", style="dim")
    if level.type:
        label.append(f"  {level.type}")
    return label


def _table(graph: GraphDoc) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # Only the free-text state column may wrap; names, clocks and numbers stay on one line.
    table.add_column("level", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("clock", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("state", justify="right")
    table.add_column("update/token", justify="right", no_wrap=True)
    for level in graph.levels:
        table.add_row(
            Text(level.name),
            Text(level.kind),
            Text(level.clock.text),
            Text(human_count(level.params)),
            Text(level.state_display),
            Text(human_count(level.update_cost)),
        )
    total = sum(level.params or 0 for level in graph.levels)
    training = training_values((level.kind, level.params, level.state_size) for level in graph.levels)
    table.caption = (f"learnable parameters owned by the levels: {human_count(total)}\n"
                     f"with their gradients and optimizer states, training holds {human_count(training)} values")
    return table
