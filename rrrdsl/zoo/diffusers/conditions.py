"""The conditions a diffusers network takes, as keyword arguments of ``model("name", ...)``.

===================  ====================  ==============================================
network              leaf                  network input
===================  ====================  ==============================================
unconditional        ``model("name")``     none
class-conditional    ``model("name",       ``class_labels``: the label, or the null label
                     label=3)``            (:attr:`Labels.null_label`) for ``model("name")``
text-conditional     ``model("sd",         ``encoder_hidden_states``: the prompt encoded by
                     prompt="a dog")``     the pipeline's text encoder (once, then cached);
                                           the empty prompt is the unconditional model
===================  ====================  ==============================================

The null label and the empty prompt are the unconditional slots of classifier-free guidance
(Ho & Salimans, 2022). Each class turns a leaf's keyword arguments into a hashable condition
(checked before any network runs) and a list of conditions into the network's inputs, one row
per condition, for the adapter's batched forward (:mod:`.adapter`).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Hashable, Optional, Sequence

import torch
from torch import nn

from ...errors import InvalidValueError, UnknownNameError, suggest


class Conditions(abc.ABC):
    """The conditions of one network: keyword names, their checks and their network inputs."""

    #: the keyword arguments ``model("name", ...)`` accepts
    keys: tuple[str, ...] = ()

    def condition(self, what: str, **arguments: Any) -> Hashable:
        """The condition of a leaf ``what`` with keyword ``arguments`` (None: unconditional)."""
        for key in arguments:
            if key not in self.keys:
                accepted = ", ".join(f"{k}=" for k in self.keys) or "no arguments"
                raise UnknownNameError(f"{what} takes no argument {key!r}", hint=suggest(key, self.keys) or f"it takes {accepted}")
        return self._check(what, **arguments)

    def _check(self, what: str, **arguments: Any) -> Hashable:
        return None

    def inputs(self, conditions: Sequence[Hashable], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The network's keyword inputs for ``conditions``, each with one row per condition."""
        return {}


class Unconditional(Conditions):
    """A network without conditions: ``model("name")`` only."""


class Labels(Conditions):
    """Class labels ``0 .. num_labels-1`` (``class_labels``), ``null_label`` for ``model("name")``.

    ``keyword`` names the leaf's argument (``label=`` by default; a pipeline folder may declare
    its own in ``rrrdsl.json``, e.g. ``cell=`` for ``model("objects", cell=5)``).
    """

    def __init__(self, num_embeddings: int, null_label: Optional[int] = None, keyword: str = "label") -> None:
        self.null_label = num_embeddings - 1 if null_label is None else null_label
        if not 0 <= self.null_label < num_embeddings:
            raise InvalidValueError(f"the null label must be one of the {num_embeddings} class embeddings 0..{num_embeddings - 1}, got {null_label}")
        if not keyword.isidentifier():
            raise InvalidValueError(f"a label keyword must be an identifier, got {keyword!r}")
        self.labels = [k for k in range(num_embeddings) if k != self.null_label]
        self.keyword = keyword
        self.keys = (keyword,)

    def _check(self, what: str, **arguments: Any) -> Hashable:
        label = arguments.get(self.keyword)
        if label is None:
            return None
        if isinstance(label, bool) or not isinstance(label, (int, float)) or label != int(label) or int(label) not in self.labels:
            raise InvalidValueError(
                f"{what}: {self.keyword} must be an integer {self.labels[0]}..{self.labels[-1]}, got {label!r}",
                hint=f"{self.keyword} {self.null_label} is the unconditional slot: omit {self.keyword}= for it",
            )
        return int(label)

    def inputs(self, conditions: Sequence[Hashable], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        labels = [self.null_label if c is None else c for c in conditions]
        return {"class_labels": torch.tensor(labels, dtype=torch.long, device=device)}


class Prompts(Conditions):
    """Text prompts encoded by a CLIP-style text encoder (``encoder_hidden_states``); ``load()``
    returns ``(tokenizer, text_encoder)``.

    A prompt is tokenised to the tokenizer's ``model_max_length`` (padded and truncated, as
    diffusers' Stable Diffusion pipeline does) and encoded once; the last hidden state is cached
    per prompt. ``model("sd")`` is the empty prompt ``""``.
    """

    keys = ("prompt",)

    def __init__(self, load: Callable[[], tuple[Any, nn.Module]]) -> None:
        self._load = load
        self._components: Optional[tuple[Any, nn.Module]] = None
        self.cache: dict[str, torch.Tensor] = {}

    @property
    def components(self) -> tuple[Any, nn.Module]:
        """``(tokenizer, text encoder)``, loaded by ``load()`` at the first prompt encoded."""
        if self._components is None:
            self._components = self._load()
        return self._components

    def _check(self, what: str, prompt: Any = None) -> Hashable:
        if prompt is None:
            return ""
        if not isinstance(prompt, str):
            raise InvalidValueError(f"{what}: prompt must be a string, got {prompt!r}")
        return prompt

    def encode(self, prompt: str) -> torch.Tensor:
        """The encoder's last hidden state for ``prompt``, ``[L, H]`` (computed once)."""
        if prompt not in self.cache:
            tokenizer, text_encoder = self.components
            tokens = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
            device = next(text_encoder.parameters()).device
            with torch.no_grad():
                self.cache[prompt] = text_encoder(tokens.input_ids.to(device))[0][0]
        return self.cache[prompt]

    def inputs(self, conditions: Sequence[Hashable], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        states = torch.stack([self.encode(str(c)) for c in conditions])
        return {"encoder_hidden_states": states.to(device=device, dtype=dtype)}
