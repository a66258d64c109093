"""Runtime that executes compiled nested-learning models (``nldsl.runtime``)."""
