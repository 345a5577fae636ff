"""The host agent: registers a host, long-polls for assignments, drives a runtime, reports back."""
