"""Talking to a served model over the OpenAI chat-completions protocol (OpenAI, vLLM, SGLang, Ollama,
`mmsafety-serve`): settings, image encoding, the response cache, retries, accounting and budgets.

The adapter in mmsafety.models.openai_compatible is the only user; workloads see a model that
generates and scores choices like any other.
"""
