"""Model files: GGUF metadata, choosing and downloading a model, synthetic models, and the
prompt in the model's own chat template."""
