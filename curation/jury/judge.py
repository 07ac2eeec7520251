"""A rubric judge: one criterion, one prompt per item, a 1..scale_max rating (distilabel style).

A rubric is a Jinja2 template (sandboxed, undefined variables are errors) that renders the user
message from `prompt` (what the answer responds to, as text), `answer` (the text rated) and
`scale_max`; a comparison rubric (see curation.preference.pairwise) also renders `second`, the answer
shown second, and rates 1 (the first is better) or 2 (the second is). It holds the criterion
only: the judge appends the answer format for the model's mode itself:

- logprobs (the model returns token log-probabilities): the rating digit alone, one token; the
  score is the G-Eval expectation sum(p_i * i) / sum(p_i) over the labels 1..scale_max at the
  first generated position that has any label. With no label mass it falls back to the text.
- json (the model honours a JSON schema): {"reason": ..., "score": 1..scale_max}.
- text: the answer ends with "Rating: N", read by a tolerant parser (the last explicit rating).

An answer that cannot be read is re-asked up to `reasks` times by continuing the conversation
(the previous answer as an assistant turn, then a short correction), so each re-ask is a new
request for the cache. Every round is one `model.complete` call for all items that need it (an
endpoint runs them concurrently, a local model batches them). A rating comes back for every
item, in order: a score, or None with the reason ("unparsable", or the model's error).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from curation.llm.types import ChatModel, ChatRequest, Completion
from schemas.base import ConfigError

RUBRICS = Path(__file__).resolve().parents[1] / "resources" / "rubrics"
RUBRIC_SUFFIX = ".jinja"
CUT_MARK = "[... cut]"
MIN_LABEL_MASS = 1e-6  # below this the log-probs carry no rating: read the text instead


@dataclass(frozen=True)
class JudgeItem:
    prompt: str  # what the answer responds to, rendered as text ("" for raw documents)
    answer: str  # the text rated: the last assistant turn, or a raw document
    second: str | None = None  # comparison rubrics only: the answer shown second


@dataclass
class Rating:
    score: float | None  # 1..scale_max; probability-weighted when read from log-probs (G-Eval)
    raw: str | None  # the judge's last raw answer (kept, esp. when score is None)
    method: str | None  # "logprobs" | "json" | "text"; None when failed
    error: str | None  # why score is None: "unparsable", or the Completion error
    attempts: int  # model calls made for this item (1 + re-asks)


# ---------------------------------------------------------------------------- rubrics
def bundled_rubrics() -> list[str]:
    return sorted(p.name[: -len(RUBRIC_SUFFIX)] for p in RUBRICS.glob(f"*{RUBRIC_SUFFIX}"))


def load_rubric(name_or_path: str) -> str:
    """The text of a bundled rubric (curation/resources/rubrics/<name>.jinja) or of a file."""
    bundled = RUBRICS / f"{name_or_path}{RUBRIC_SUFFIX}"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", name_or_path) and bundled.is_file():
        return bundled.read_text(encoding="utf-8")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(
        f"rubric {name_or_path!r} is neither a bundled rubric ({', '.join(bundled_rubrics())}) nor a file"
    )


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def compile_rubric(name: str, rubric: str, scale_max: int = 5, comparison: bool = False) -> tuple[Template, bool]:
    """The rubric's sandboxed template and whether it places {{ instruction }} itself; a
    ConfigError when it does not compile, uses unknown names, or never shows the answer (a judge
    would rate text it never saw). `comparison`: it must show `second` too."""
    try:
        variables = meta.find_undeclared_variables(_ENV.parse(rubric))
        template = _ENV.from_string(rubric)
        # Undefined names fail now, not on the first item.
        template.render(prompt="p", answer="a", second="b", scale_max=scale_max, instruction="i")
    except TemplateError as e:
        raise ConfigError(f"judge {name}: rubric template error: {e}") from e
    if "answer" not in variables:
        raise ConfigError(f"judge {name}: the rubric never shows the answer it rates: use {{{{ answer }}}}")
    if comparison != ("second" in variables):
        raise ConfigError(
            f"judge {name}: "
            + (
                "a comparison rubric must show both answers ({{ answer }} and {{ second }})"
                if comparison
                else "this rubric compares two answers ({{ second }}): use it as preference.pairwise.rubric"
            )
        )
    # A rubric may place the answer-format line itself ({{ instruction }}, e.g. before a long
    # answer, so the answer comes last); otherwise the judge appends it.
    return template, "instruction" in variables

_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def render_conversation(messages: list[dict]) -> str:
    """[{"role", "content"}] -> "User: ...\\n\\nAssistant: ..." ("System: " for system turns)."""
    parts = []
    for m in messages:
        role = str(m.get("role") or "")
        name = _ROLE_NAMES.get(role, role.capitalize() or "User")
        parts.append(f"{name}: {(m.get('content') or '').strip()}")
    return "\n\n".join(parts)


def _cut_end(text: str, max_chars: int) -> str:
    """Keep the start (an answer)."""
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + f" {CUT_MARK}"


def _cut_start(text: str, max_chars: int) -> str:
    """Keep the end (a conversation: its last turns matter most)."""
    return text if len(text) <= max_chars else f"{CUT_MARK} " + text[-max_chars:].lstrip()


# ---------------------------------------------------------------------------- parsing
# A minus sign right before the digits belongs to the number ("Rating: -5" is -5, out of range,
# never 5); one set apart ("Rating - 4") is punctuation.
_MINUS = "-\u2212\u2013"  # hyphen-minus, minus sign, en dash
_NUMBER = rf"([{_MINUS}]?\d+(?:\.\d+)?)"
# "Rating: 4", "**Score:** 4", '"score": 4', "rating of 4", "score is 4", "I rate it 4"
_EXPLICIT = re.compile(
    r"\b(?:rating|score|grade|rate)\b[^\d\n.?!]{0,16}?" + _NUMBER + r"(?!\s*(?:-|–|to)\s*\d)(?!\.?\d)",
    re.IGNORECASE,
)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def _number(text: str) -> float:
    """A matched number with its sign (a Unicode minus or en dash reads as "-")."""
    return float(re.sub(f"^[{_MINUS}]", "-", text))


def parse_rating(text: str | None, scale_max: int = 5) -> float | None:
    """A 1..scale_max rating from free text, or None.

    Reads, in order of position: JSON objects with "score" (or "rating"), "Rating: 4",
    "Score: 4", "4/5", "4 out of 5", each with its sign. The LAST in-range explicit rating wins
    (a model may reason first and conclude last); out-of-range values (negative ones too) are
    ignored. Without any, a lone number (e.g. "4" or "**4**.") in range is the rating.
    """
    if not text:
        return None
    found: list[tuple[int, float]] = []
    for match in _JSON_OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(data, dict):
            for key in ("score", "rating"):
                value = data.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found.append((match.end(), float(value)))
                    break
    for match in _EXPLICIT.finditer(text):
        found.append((match.end(), _number(match.group(1))))
    for match in re.finditer(_NUMBER + rf"\s*(?:/|out of)\s*{scale_max}\b", text, re.IGNORECASE):
        found.append((match.end(1), _number(match.group(1))))
    valid = [(pos, value) for pos, value in found if 1 <= value <= scale_max]
    if valid:
        return max(valid, key=lambda pv: pv[0])[1]
    lone = re.fullmatch(r"[\s*_\"'`(\[]*" + _NUMBER + r"[\s*_\"'`)\].!]*", text)
    if lone and 1 <= _number(lone.group(1)) <= scale_max:
        return _number(lone.group(1))
    return None


def score_from_logprobs(logprobs: list[dict[str, float]] | None, scale_max: int = 5) -> float | None:
    """G-Eval: sum(p_i * i) / sum(p_i) over the labels 1..scale_max at the first position that
    has any label (labels compared after stripping whitespace); None when the mass is ~0, or
    when the model's likeliest token there is a minus sign: it is writing a negative number, and
    the digits' leftover mass would read it without its sign (the text decides instead)."""
    labels = {str(i): i for i in range(1, scale_max + 1)}
    for position in logprobs or []:
        likeliest = max(position, key=lambda t: -math.inf if position[t] is None else position[t], default="").strip()
        if likeliest.startswith(tuple(_MINUS)):
            return None
        mass: dict[int, float] = {}
        for token, logprob in position.items():
            label = labels.get(token.strip())
            if label is not None and logprob is not None and logprob > -math.inf:
                mass[label] = mass.get(label, 0.0) + math.exp(logprob)
        if mass:
            total = sum(mass.values())
            if total < MIN_LABEL_MASS:
                return None
            return sum(p * i for i, p in mass.items()) / total
    return None


# ---------------------------------------------------------------------------- the judge
class RubricJudge:
    def __init__(
        self,
        name: str,
        model: ChatModel,
        rubric: str,
        *,
        scale_max: int = 5,
        temperature: float = 0.0,
        max_tokens: int = 256,
        reasks: int = 2,
        max_chars: int = 6000,
        comparison: bool = False,
    ) -> None:
        """`rubric` is the template text (see load_rubric); a bundled rubric's name also works.
        `comparison`: the rubric compares `answer` with `second` (it must use both)."""
        if re.fullmatch(r"[A-Za-z0-9_.-]+", rubric) and rubric in bundled_rubrics():
            rubric = load_rubric(rubric)
        self.name = name
        self.model = model
        self.rubric = rubric
        self.template_hash = hashlib.sha256(rubric.encode("utf-8")).hexdigest()
        self.scale_max = scale_max
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reasks = reasks
        self.max_chars = max_chars
        if model.supports_logprobs:
            self.mode = "logprobs"
        elif model.supports_json_schema:
            self.mode = "json"
        else:
            self.mode = "text"
        self._template, self._places_instruction = compile_rubric(name, rubric, scale_max, comparison)

    # -------------------------------------------------------------- prompts
    def _format_instruction(self) -> str:
        n = self.scale_max
        if self.mode == "logprobs":
            return f"Reply with the rating only: a single digit from 1 to {n}."
        if self.mode == "json":
            return (
                f'Reply with a JSON object: "reason" (one or two sentences), then "score"'
                f" (an integer from 1 to {n})."
            )
        return f'Explain briefly, then end with a last line "Rating: N", where N is an integer from 1 to {n}.'

    def _correction(self) -> str:
        n = self.scale_max
        if self.mode == "logprobs":
            return f"Your rating could not be read. Reply with one digit from 1 to {n} only."
        if self.mode == "json":
            return f'That was not valid. Reply with the JSON object only: {{"reason": "...", "score": <1-{n}>}}'
        return f'Your rating could not be read. End with the line "Rating: N" (N from 1 to {n}).'

    def user_message(self, item: JudgeItem) -> str:
        instruction = self._format_instruction()
        body = self._template.render(
            prompt=_cut_start(item.prompt, self.max_chars),
            answer=_cut_end(item.answer, self.max_chars),
            second=_cut_end(item.second or "", self.max_chars),
            scale_max=self.scale_max,
            instruction=instruction,
        ).strip()
        return body if self._places_instruction else f"{body}\n\n{instruction}"

    def _json_schema(self) -> dict:
        return {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "score": {"type": "integer", "minimum": 1, "maximum": self.scale_max},
            },
            "required": ["reason", "score"],
            "additionalProperties": False,
        }

    def _request(self, messages: tuple[tuple[str, str], ...]) -> ChatRequest:
        if self.mode == "logprobs":
            local = str(getattr(self.model, "identity", "")).startswith("local")
            return ChatRequest(
                messages=messages,
                temperature=self.temperature,
                max_tokens=1 if local else min(self.max_tokens, 5),  # endpoints may open with a space
                logprobs=True,
                top_logprobs=20,
                logprob_tokens=tuple(str(i) for i in range(1, self.scale_max + 1)),
            )
        return ChatRequest(
            messages=messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            json_schema=self._json_schema() if self.mode == "json" else None,
        )

    # -------------------------------------------------------------- rating
    def _read(self, completion: Completion) -> tuple[float | None, str | None]:
        if self.mode == "logprobs":
            score = score_from_logprobs(completion.logprobs, self.scale_max)
            if score is not None:
                return score, "logprobs"
        elif self.mode == "json":
            try:
                data = json.loads(completion.text or "")
                value = data.get("score") if isinstance(data, dict) else None
                if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= self.scale_max:
                    return float(value), "json"
            except ValueError:
                pass
        score = parse_rating(completion.text, self.scale_max)
        return (score, "text") if score is not None else (None, None)

    def rate(self, items: Sequence[JudgeItem], progress: str | None = None) -> list[Rating]:
        """One Rating per item, same order; never raises for an item."""
        conversations = [(("user", self.user_message(item)),) for item in items]
        ratings: list[Rating] = [Rating(None, None, None, "not rated", 0) for _ in items]
        pending = list(range(len(items)))
        for round_ in range(self.reasks + 1):
            if not pending:
                break
            label = None
            if progress:
                label = progress if round_ == 0 else f"{progress} (re-ask {round_})"
            completions = self.model.complete([self._request(conversations[i]) for i in pending], progress=label)
            unreadable = []
            for i, completion in zip(pending, completions, strict=True):
                rating = ratings[i]
                rating.attempts += 1
                if completion.text is None:  # the model failed for good: no re-ask
                    rating.error = completion.error or "unknown error"
                    continue
                rating.raw = completion.text
                score, method = self._read(completion)
                if score is not None:
                    rating.score, rating.method, rating.error = score, method, None
                    continue
                rating.error = "unparsable"
                unreadable.append(i)
                conversations[i] = conversations[i] + (
                    ("assistant", completion.text),
                    ("user", self._correction()),
                )
            pending = unreadable
        return ratings
