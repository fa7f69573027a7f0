"""Links from a report into the viewer: `distill view RUN_DIR` (distill/view/) serves on
127.0.0.1 at DEFAULT_PORT, and its page reads the view from the URL hash (view/page.html lists
the routes), so a report written before the viewer runs can still point at a filtered list.
The filter report and the leaderboard write these links; the viewer sits above both."""

from __future__ import annotations

from urllib.parse import urlencode

DEFAULT_PORT = 8765

BASE = f"http://127.0.0.1:{DEFAULT_PORT}/"


def view_url(route: str, **params: object) -> str:
    """`view_url("traces", failed="verify")` -> http://127.0.0.1:8765/#/traces?failed=verify.
    Parameters that are None are left out."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{BASE}#/{route}" + (f"?{query}" if query else "")


def markdown_link(text: str, route: str, **params: object) -> str:
    return f"[{text}]({view_url(route, **params)})"


NOTE = (f"Links below open the run in the viewer: start it first with `distill view RUN_DIR` "
        f"(it serves {BASE}).")


def leaderboard_section(rows: list[dict]) -> str:
    """Markdown after the leaderboard: per benchmark and category, links to the questions the
    student flipped against each other role of the run's paired comparisons."""
    cats = list(dict.fromkeys((r["benchmark"], r["category"]) for r in rows))
    others = [role for role in dict.fromkeys(r["role"] for r in rows) if role != "student"]
    if not cats or not others:
        return ""
    lines = ["", "## See the questions", "", NOTE, "",
             "| benchmark | category | " + " | ".join(f"student vs {o}" for o in others) + " |",
             "|---|---|" + "---|" * len(others)]
    for bench, cat in cats:
        cells = " | ".join(markdown_link("flipped questions", "eval", benchmark=bench, category=cat,
                                         a="student", b=o) for o in others)
        lines.append(f"| {bench} | {cat} | {cells} |")
    return "\n".join(lines) + "\n"
