"""Many slides: folder search, batches that resume, locks, shards, Ray, the cohort report and progress."""
