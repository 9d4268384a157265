"""Ray Data wrappers, one module per stage: resources, columns in/out, setup and __call__."""
