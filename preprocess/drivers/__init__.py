"""The drivers: what finds, batches and schedules work and commits it (ingest, run, the watch daemon,
Ray). Imports every layer below; never a face."""
