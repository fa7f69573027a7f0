"""Teacher I/O over the OpenAI chat-completions API: the async client (`complete_all`), the
endpoint to use (`teacher_endpoint`, `serve_local`) and, in `distill.teacher.server`, the
project's own OpenAI-compatible server for local Hugging Face models."""

from distill.teacher.client import Choice, Job, Response, complete_all
from distill.teacher.local import serve_local, teacher_endpoint

__all__ = ["Choice", "Job", "Response", "complete_all", "serve_local", "teacher_endpoint"]
