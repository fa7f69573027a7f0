"""The OpenAI request shapes distill's own server honours (`ChatRequest`, `CompletionRequest`)
and the reasoning split it applies to generated text, as vLLM's reasoning parsers do."""

from pydantic import BaseModel, ConfigDict, Field

THINK, END_THINK = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str | None, str]:
    """`<think>R</think>A` -> (R, A). Like vLLM's R1 parser, an opened but unclosed think block
    (a trace cut at max_tokens) is all reasoning, and a closing tag without an opening one (R1's
    chat template opens the block in the prompt) ends the reasoning; text with no think block
    is all content."""
    if END_THINK in text:
        reasoning, content = text.split(END_THINK, 1)
        return reasoning.split(THINK, 1)[-1], content
    if text.lstrip().startswith(THINK):
        return text.split(THINK, 1)[1], ""
    return None, text


# ------------------------------------------------------------------------------ request model

class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request this server honours; unknown fields
    (user, presence_penalty, ...) are accepted and ignored as vLLM does."""
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    n: int = Field(1, ge=1, le=256)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    stream: bool = False
    chat_template_kwargs: dict | None = None  # e.g. {"enable_thinking": false} for Qwen3, as in vLLM
    return_tokens_as_token_ids: bool = False  # vLLM's extension: logprob tokens as "token_id:N"
    stop_token_ids: list[int] | None = None   # vLLM's extension: more tokens that end the answer


class CompletionRequest(BaseModel):
    """POST /v1/completions: text or token-id prompts, and vLLM's `prompt_logprobs` (the
    model's top-k at every prompt position, which TRL's server distillation scores with)."""
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    n: int = Field(1, ge=1, le=256)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(16, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
