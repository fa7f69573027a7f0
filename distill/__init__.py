"""distill: teacher-student distillation for LLMs (prompts, generate, filter, train, quantize,
evaluate, publish). Importing it imports nothing heavy."""

import logging


class _TorchaoNoise(logging.Filter):
    """transformers imports torchao (the `quantize` extra) whenever it loads a model; on a CPU
    build torchao warns for each CUDA-only extension it cannot load, and torch for each of its
    enums registered the old way. Neither says anything about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Failed to load") and "torchao" in msg
                    or "Calling register_constant() on Enum subclasses is deprecated" in msg)


logging.getLogger("torchao").addFilter(_TorchaoNoise())
logging.getLogger("torch.utils._pytree").addFilter(_TorchaoNoise())
