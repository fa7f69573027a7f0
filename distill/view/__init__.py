"""`distill view RUN_DIR [RUN_DIR ...]`: a local, offline page over a run's records: prompts,
teacher samples, the filter's verdicts (kept or rejected, and why), and the evaluation's
flipped questions with every role's answer side by side.

    index.py    reads the run once, caches run_dir/view/index.json (rebuilt when a source changes)
    query.py    filters and pages over the index; what each JSON endpoint answers
    server.py   the page and the JSON endpoints (standard library HTTP server; why, there)
    page.html   the page: hash routes, so a report can link to a filtered view
    (distill/links.py: the links reports write into the page)
"""

from distill.view.server import DEFAULT_PORT, make_server

__all__ = ["DEFAULT_PORT", "make_server"]
