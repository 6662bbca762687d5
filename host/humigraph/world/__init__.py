"""humigraph.world."""
