"""`mmsafety-serve`: any local adapter (the organism by default) behind the OpenAI chat-completions
protocol on 127.0.0.1, so agent frameworks and mmsafety's own served-model adapter can talk to it."""
