"""Embedding models (CLAP, musicnn) and their batched, device-side front ends."""
