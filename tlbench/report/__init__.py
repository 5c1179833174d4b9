"""What a run shows: paper figures, token maps and tracking, recommendations, comparisons, and the
self-contained HTML report (html.py) with its charts (charts.py)."""
