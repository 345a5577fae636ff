"""Pure logic with no I/O: lifecycle table, catalog, pricing, placement."""
