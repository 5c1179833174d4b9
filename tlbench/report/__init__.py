"""What a run shows: paper figures, token maps and tracking, recommendations."""
