"""Model providers for the ``ExecutorAgent``: the offline default, Anthropic, and the registry that picks one.

``offline`` is the default so that every example, test and demo runs with no key and no network: it
answers deterministically from the prompt. ``anthropic`` uses the official ``anthropic`` SDK. It is only
used when chosen (``provider="anthropic"`` or ``SAFERUN_EXECUTOR_PROVIDER=anthropic``), never because an
``ANTHROPIC_API_KEY`` happens to be in the environment: a test suite or a demo should not start spending
money because of a developer's shell.

Configuration problems surface before any work is done: a missing key fails when the provider is built,
a refused key or an unknown model when the agent starts (``verify``), both as ``InvalidInput`` naming the
setting to fix. Failures of the service itself (unreachable, overloaded, 5xx) are ``ProviderError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from saferun.agents.executor.pricing import ModelPrice, estimate_cost
from saferun.config import get_settings
from saferun.errors import InvalidInput, SafeRunError

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-5-5"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
KEY_HINT = "set ANTHROPIC_API_KEY to a valid key, or use SAFERUN_EXECUTOR_PROVIDER=offline"


class ProviderError(SafeRunError):
    """The model service failed (unreachable, overloaded, a 5xx): not the caller's configuration."""

    http_status = 502

    def __init__(self, provider: str, message: str, status_code: int | None = None) -> None:
        super().__init__(f"{provider} provider: {message}", provider=provider, status_code=status_code)
        self.provider = provider
        self.status_code = status_code


@dataclass(frozen=True)
class Completion:
    """One model answer and what it used. ``cost_usd`` is exact, or ``None`` when the model is unpriced."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str
    cost_usd: Decimal | None
    stop_reason: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class ProviderCheck:
    """What ``verify`` asked the service, for the record (no secrets)."""

    endpoint: str
    method: str
    status: int
    summary: str


class Provider(Protocol):
    """What the executor needs from a model. ``endpoint``/``method`` describe completions for the record."""

    name: str
    model: str
    endpoint: str
    method: str

    async def verify(self) -> ProviderCheck | None:
        """Prove the configuration works before the first task step; ``None`` when there is nothing to
        check. Raises ``InvalidInput`` naming the setting to fix."""
        ...

    async def complete(self, prompt: str, *, system: str, max_tokens: int) -> Completion: ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------------- offline
class OfflineProvider:
    """A deterministic stand-in for a model: same prompt, same answer, no network, no cost.

    The answer is a short plan built from the task's first words, tagged with a digest of the whole
    prompt, and ends with a ``Confidence:`` line (0.70 to 0.99, also from the digest) so confidence
    tracking and low-confidence alerts can be exercised offline. Tokens are counted as words.
    """

    name = "offline"
    method = "COMPLETE"

    def __init__(self, model: str | None = None, price: ModelPrice | None = None) -> None:
        self.model = model or "offline"
        self.price = price
        self.endpoint = f"offline://{self.model}"

    async def verify(self) -> ProviderCheck | None:
        return None

    async def complete(self, prompt: str, *, system: str = "", max_tokens: int = 1024) -> Completion:
        digest = hashlib.sha256(f"{system}\x00{prompt}".encode()).hexdigest()
        first_line = prompt.strip().splitlines()[0] if prompt.strip() else ""
        steps = "; ".join(f"step {i + 1}: {w}" for i, w in enumerate(first_line.split()[:5]))
        confidence = Decimal(70 + int(digest[:8], 16) % 30) / 100
        words = f"Plan {digest[:8]}: {steps}".split()
        stop_reason = "end_turn"
        if len(words) + 2 > max_tokens:
            words, stop_reason = words[: max(max_tokens - 2, 0)], "max_tokens"
        text = " ".join(words) + f"\nConfidence: {confidence}"
        input_tokens = len(system.split()) + len(prompt.split())
        output_tokens = len(text.split())
        cost = self.price.cost(input_tokens, output_tokens) if self.price else Decimal(0)
        return Completion(text, input_tokens, output_tokens, self.model, cost, stop_reason)

    async def aclose(self) -> None:
        return None


# ----------------------------------------------------------------------------------------- anthropic
class AnthropicProvider:
    """Claude through the official ``anthropic`` SDK (Messages API).

    The key comes from ``api_key`` or ``ANTHROPIC_API_KEY`` (environment or ``.env``); the server from
    ``base_url`` or ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``); the model from
    ``model``, ``SAFERUN_EXECUTOR_MODEL`` or ``DEFAULT_ANTHROPIC_MODEL``. ``verify`` retrieves the model
    (``GET /v1/models/{model}``): it costs no tokens and proves both the key and the model name.
    """

    name = "anthropic"
    method = "POST"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        price: ModelPrice | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        verify_timeout: float = 30.0,
    ) -> None:
        import anthropic  # imported here: only a process that chose Anthropic pays for the SDK import

        settings = get_settings()
        if api_key is None and settings.anthropic_api_key is not None:
            api_key = settings.anthropic_api_key.get_secret_value()
        key = (api_key or "").strip()
        if not key:
            raise InvalidInput(
                "ANTHROPIC_API_KEY",
                "is not set, and the anthropic provider needs it; set it, or use "
                "SAFERUN_EXECUTOR_PROVIDER=offline for the keyless offline provider",
            )
        self.model = model or settings.executor_model or DEFAULT_ANTHROPIC_MODEL
        self.price = price
        self.verify_timeout = verify_timeout
        self._sdk = anthropic
        self._client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url or settings.anthropic_base_url or ANTHROPIC_BASE_URL,
            timeout=timeout,
            max_retries=max_retries,
        )
        self.base_url = _without_credentials(str(self._client.base_url).rstrip("/"))
        self.endpoint = f"{self.base_url}/v1/messages"

    async def verify(self) -> ProviderCheck:
        try:
            info = await self._client.models.retrieve(self.model, timeout=self.verify_timeout)
        except Exception as exc:
            raise self._translate(exc) from None
        return ProviderCheck(
            endpoint=f"{self.base_url}/v1/models/{self.model}",
            method="GET",
            status=200,
            summary=f"key accepted; model {info.id} ({info.display_name}) available",
        )

    async def complete(self, prompt: str, *, system: str = "", max_tokens: int = 1024) -> Completion:
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        if system:
            request["system"] = system
        try:
            message = await self._client.messages.create(**request)
        except Exception as exc:
            raise self._translate(exc) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        used = message.model or self.model
        usage = message.usage
        return Completion(
            text=text,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            model=used,
            cost_usd=estimate_cost(used, usage.input_tokens, usage.output_tokens, self.price),
            stop_reason=message.stop_reason,
            request_id=getattr(message, "_request_id", None),
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _translate(self, exc: Exception) -> Exception:
        """An SDK error as a SafeRun error that says what to fix; anything else unchanged."""
        sdk = self._sdk
        if isinstance(exc, sdk.AuthenticationError | sdk.PermissionDeniedError):
            return InvalidInput(
                "ANTHROPIC_API_KEY",
                f"was refused by {self.base_url} ({exc.status_code}: {_api_message(exc)}); {KEY_HINT}",
            )
        if isinstance(exc, sdk.NotFoundError):
            return InvalidInput(
                "model",
                f"{self.model!r} is not a model {self.base_url} offers ({_api_message(exc)}); set "
                "model= or SAFERUN_EXECUTOR_MODEL to an available model",
            )
        if isinstance(exc, sdk.APIStatusError):
            return ProviderError(
                self.name, f"{exc.status_code} from {self.base_url}: {_api_message(exc)}", exc.status_code
            )
        if isinstance(exc, sdk.APIConnectionError):
            return ProviderError(self.name, f"cannot reach {self.base_url}: {exc}")
        return exc


def _api_message(exc: Any) -> str:
    """The ``error.message`` of an Anthropic error body, else the SDK's own message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return f"{err.get('type', 'error')}: {err['message']}"
    return str(getattr(exc, "message", exc))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# ------------------------------------------------------------------------------------------ registry
ProviderFactory = Callable[..., Provider]

_REGISTRY: dict[str, ProviderFactory] = {"offline": OfflineProvider, "anthropic": AnthropicProvider}


def provider_names() -> list[str]:
    return sorted(_REGISTRY)


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make ``name`` choosable by ``make_provider``/``SAFERUN_EXECUTOR_PROVIDER`` (another vendor, a
    local model). ``factory`` is called with the keyword options given to ``make_provider``."""
    key = name.strip().lower() if isinstance(name, str) else ""
    if not key:
        raise InvalidInput("name", "a provider needs a non-empty name")
    _REGISTRY[key] = factory


def make_provider(name: str | None = None, **options: Any) -> Provider:
    """Build the provider called ``name`` (default: ``SAFERUN_EXECUTOR_PROVIDER``, else ``offline``).

    Options left as ``None`` are dropped, so callers can pass ``model=None`` through. An unknown name is
    an ``InvalidInput`` naming where the name came from and listing the choices.
    """
    field = "provider"
    if name is None:
        name, field = get_settings().executor_provider, "SAFERUN_EXECUTOR_PROVIDER"
    if not isinstance(name, str):
        raise InvalidInput(field, f"must be a provider name or a Provider object, not {type(name).__name__}")
    factory = _REGISTRY.get(name.strip().lower())
    if factory is None:
        raise InvalidInput(field, f"unknown provider {name!r} (choices: {', '.join(provider_names())})")
    return factory(**{k: v for k, v in options.items() if v is not None})
