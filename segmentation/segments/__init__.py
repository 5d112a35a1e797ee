"""Segments of a customer table: clusters (k sweep), RFM scores and the named grid, value tiers."""
