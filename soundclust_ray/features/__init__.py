"""Signal feature families: pure functions of (samples, sample rate); nothing here imports ray."""
