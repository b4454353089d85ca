"""aidx.service.routes."""
