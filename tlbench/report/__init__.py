"""Figures and tables of results: plots, maps, tables, pages."""
