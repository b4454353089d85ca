"""aidx.adapters: what joins a pipeline to a protocol (intake, write-back builders)."""
