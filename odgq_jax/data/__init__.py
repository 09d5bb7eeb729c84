"""Input pipelines: `input_pipeline` turns TFDS image datasets into deterministic numpy batches."""
