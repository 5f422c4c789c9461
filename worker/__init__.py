"""The GPU side: a warm pipeline, the job functions, progress previews and delivery of results."""
