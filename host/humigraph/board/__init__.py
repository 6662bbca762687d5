"""humigraph.board."""
