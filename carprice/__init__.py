"""The ``carprice`` command line."""
