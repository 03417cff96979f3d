"""shellid service layer: FastAPI app, web page and the ``shellid`` command line."""
