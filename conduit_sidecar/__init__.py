"""Conduit: an online-learning LLM router served as a gRPC sidecar."""
