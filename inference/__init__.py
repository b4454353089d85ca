"""aidx.inference."""
