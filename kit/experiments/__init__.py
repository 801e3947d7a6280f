"""What the notebooks call: verified caches, grids, studies, tables, figures, the protocol."""
