"""Data: where datasets come from and how they are stored, tagged, split into parts and shards."""
