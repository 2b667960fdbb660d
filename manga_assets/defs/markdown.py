"""Small Markdown renderings for asset metadata."""

from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame, *, max_rows: int = 50) -> str:
    """``frame`` as a GitHub-flavoured Markdown table (first ``max_rows`` rows)."""
    if frame.empty:
        return "none"
    shown = frame.head(max_rows)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = [
        "| " + " | ".join(str(value).replace("|", "\\|").replace("\n", " ") for value in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    more = [f"\n... {len(frame) - max_rows} more rows"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *body, *more])
