"""Device and execution-provider selection."""
