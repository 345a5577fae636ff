"""The `coldplate` command line. Resource commands only talk to the SDK."""
