"""Non-audio inputs: Million Song Dataset HDF5 files and tabular audio-feature tables."""
