"""Agent loops with stateful, sandboxed tools: did the attacker's tool actually run?

- `tools`: a tool is an OpenAI-function JSON schema plus a function of the environment's state;
  arguments are validated against the schema before anything runs.
- `environment`: the deterministic in-process workspace (mail, travel, web) the tools act on; no
  network, no files, no code from the model. Its state is plain data, checked after the loop.
- `formats`: the tool-call syntaxes a model writes (Hermes `<tool_call>{json}</tool_call>`, Fu et
  al.'s `<function.NAME key="value">`), parsed into calls; a malformed call is an invalid call.
- `tasks`: user tasks and injection tasks as data (mmsafety/agents/data/*.json), each with checks
  on the final state.
- `loop`: up to N turns of answer -> calls -> results; the trajectory of every call.
"""
