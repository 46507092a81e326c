"""The ``fleet`` command line (typer), a thin layer over ``fleet.client``."""
