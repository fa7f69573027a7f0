"""Serving models over the OpenAI API, shared by teacher generation and evaluation: the
project's own server (`server`, `engine`, `protocol`), the process launcher (`launcher`), a
managed `vllm serve` (`vllm_serve`), the endpoint a stage talks to (`endpoint`), and the
dry-run teacher of rehearsals (`dryrun`).

May import: the contract (config, records, models), distill.errors, distill.toy."""
