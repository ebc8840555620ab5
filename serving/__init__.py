"""Online half: the FastAPI app serving the registry's production model."""
