"""The OpenAI-compatible endpoint over the model the trainer trains (see `trainer.backend`).

    app.py          FastAPI routes: /v1/models, /v1/chat/completions (OpenAI's error objects)
    generate.py     one request -> choices with HF `generate` (logprobs, top_logprobs, n, stop, seed)
    tool_calls.py   `<tool_call>` text (Hermes/Qwen objects, SmolLM2 lists) -> OpenAI tool_calls
    adapters.py     which weights a model name means (`name@step`, `name`, the base model)
    server.py       uvicorn in a thread of this process, on 127.0.0.1
    vllm_server.py  vLLM's own server with runtime LoRA adapters, on a GPU (untested here)
"""
