"""The SmolLM2 fixtures live in tests/llm_models.py, shared with the registry, deployment and
integration tests through tests/conftest.py."""
