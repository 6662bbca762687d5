"""humigraph.model."""
