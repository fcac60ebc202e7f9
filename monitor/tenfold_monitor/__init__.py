"""tenfold's monitor: watches a stack and runs scale.yml by itself."""
