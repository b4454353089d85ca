"""aidx.pipelines.cxr."""
