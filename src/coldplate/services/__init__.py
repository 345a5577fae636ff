"""Use cases. Each takes a session and a clock, flushes, never commits, never raises HTTP errors."""
