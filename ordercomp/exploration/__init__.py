"""The Order of Compression procedure: explorer, step pipeline, executors, step cache, results."""
