"""The ``custval`` command line (:mod:`custval.cli.main` builds the app)."""
