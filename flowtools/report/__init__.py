"""Reports: figures (matplotlib, imported lazily) and HTML pages."""
