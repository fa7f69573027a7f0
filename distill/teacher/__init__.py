"""Teacher generation's I/O: the async OpenAI client (`complete_all`, with the limits of
`limits` and the progress line of `progress`) and the vLLM offline engine (`offline`). Where
the teacher runs (a remote endpoint, a managed `vllm serve`, the project's own server) is
`distill.serving`.

May import: the contract, distill.serving."""

from distill.teacher.client import Choice, Job, Response, complete_all

__all__ = ["Choice", "Job", "Response", "complete_all"]
