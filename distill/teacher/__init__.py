"""Teacher I/O over the OpenAI chat-completions API: the async client (`complete_all`, with the
limits of `limits` and the progress line of `progress`), the endpoint to use
(`teacher_endpoint`, `serve_local`; `vllm_serve` for a managed vLLM), the vLLM offline engine
(`offline`), the project's own OpenAI-compatible server for local Hugging Face models
(`server`, `engine`, `protocol`), and a stand-in server with latency and faults (`standin`)."""

from distill.teacher.client import Choice, Job, Response, complete_all
from distill.teacher.local import serve_local, teacher_endpoint

__all__ = ["Choice", "Job", "Response", "complete_all", "serve_local", "teacher_endpoint"]
