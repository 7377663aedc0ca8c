"""Pre-annotation servers: the models and rules each uses, and debounced redeploy requests."""
