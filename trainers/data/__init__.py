"""Image sets as Parquet files, loading them as tensors, and generated demo data."""
