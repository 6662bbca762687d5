"""humigraph.gateway."""
