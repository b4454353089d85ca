"""aidx.pipelines."""
