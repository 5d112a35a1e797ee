"""Reading and writing: source readers (CSV/TSV/Parquet/SQLite), storage on local disk and S3."""
