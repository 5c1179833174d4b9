"""Reports: figures, maps, tables, pages."""
