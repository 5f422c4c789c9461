"""The diffusion model side: loading pipelines, the tiny test pipeline, the embedded model and its training."""
