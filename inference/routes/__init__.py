"""aidx.inference.routes."""
