"""The wire protocols: sans-IO codecs, their adapters to the pipeline, and handlers."""
