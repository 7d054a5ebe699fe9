"""Keep the garbage collector's full passes short in a long-running server process.

CPython's collector now and then walks every container object the process holds (a
generation-2 pass). A server that has imported pandas, plotly, SQLAlchemy and LangChain holds
a few hundred thousand of them, nearly all alive for the whole process: the modules, their
classes and functions, SQLAlchemy's compiled-statement cache. Measured in the analyst pages'
process at 10M calls (bench/pages.py): a full pass took 116-149 ms, and one fell into about
one page view in fifteen, which then took twice as long as the others.

`settle()` imports what the pages and the agent use, collects once, and moves every object
alive then into the permanent generation, which the collector does not walk (gc.freeze). A
later full pass walks only what was made since: no pass longer than 10 ms was seen over 20
views after it. Garbage made after the freeze is collected as before; what is frozen is never
freed, which for a process's modules is the same.
"""

from __future__ import annotations

import gc
import importlib
import logging

log = logging.getLogger(__name__)

# What a page view imports on first use: imported before the freeze, so that their objects are
# frozen too (and the first visitor does not wait for the imports). A caller adds its own.
PAGES = (
    "pandas",
    "plotly.express",
    "plotly.graph_objects",
    "data.analytics.context_usage",
    "data.analytics.cost",
    "data.analytics.feedback_report",
    "data.analytics.latency",
    "data.workflows.review",
    "data.workflows.review_candidates",
    "data.workflows.review_scores",
    "data.analytics.sessions",
    "data.analytics.session_sql",
)


def settle(modules: tuple[str, ...] = PAGES) -> int:
    """Import `modules`, collect, and freeze every object alive now. Returns how many objects
    were frozen. Call once per process, when it has started and before it serves."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:  # an optional part that is not installed
            log.warning("not preloaded: %s (%s)", name, error)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
