"""The self-contained HTML report of a run (html.py) and its charts (charts.py)."""
