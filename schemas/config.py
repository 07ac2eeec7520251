"""The run config: one YAML file, validated here before any expensive work.

Unknown keys are errors (a typo must not silently disable a filter). `load_config` turns
pydantic's errors into one message per problem that names the YAML path of the field.
Relative paths in the config are resolved against the config file's directory.
"""

from __future__ import annotations

import codecs
import difflib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from schemas.base import ConfigError, Strict, TextView
from schemas.execution import ExecutionConfig
from schemas.export import ExportConfig
from schemas.jury import JuryConfig, ModelSpec, PreferenceConfig, SynthesisConfig
from schemas.publish import PublishConfig
from schemas.select import SelectConfig
from schemas.train import TrainConfig
from schemas.validation import ValidationConfig

InputFormat = Literal["auto", "jsonl", "json", "parquet", "csv", "txt", "hf_disk"]
InputShape = Literal[
    "auto",
    "text",
    "alpaca",
    "dolly",
    "selfinstruct",
    "sharegpt",
    "messages",
    "prompt_response",
    "preference",
    "openai_dpo",
    "oasst",
    "hh_rlhf",
    "questions",
]
# LLaMA-Factory's dataset_info.json `columns:` names, and the input key each stands for here
# (prompt/query/response are Alpaca's instruction/input/output; messages is ShareGPT's).
INPUT_COLUMNS: dict[str, str] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
    "messages": "conversations",
    "chosen": "chosen",
    "rejected": "rejected",
    "text": "text",
    "id": "id",
}
InputColumn = Literal["prompt", "query", "response", "system", "history", "messages", "chosen", "rejected", "text", "id"]

# The format a file name says (after any compression suffix), and the compressions read.
SUFFIX_FORMATS: dict[str, InputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".txt": "txt",
    ".md": "txt",
    ".rst": "txt",
}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}


class InputSpec(Strict):
    path: str = Field(description="File, glob or directory, relative to the config file.")
    format: InputFormat = "auto"
    shape: InputShape = "auto"
    columns: dict[InputColumn, str] = Field(
        {},
        description="Which input column holds what, in LLaMA-Factory's names (prompt, query, response, system,"
        " history, messages, chosen, rejected; also text, id): e.g. {prompt: User Prompt, response: Model Answer}.",
    )
    txt_split: Literal["file", "paragraph"] = Field(
        "file", description="Plain text: one document per file, or per blank-line paragraph."
    )


# Byte order marks, longest first (a UTF-32-LE mark begins like a UTF-16-LE one), with the Python
# codec that reads the mark and decodes the rest.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class Bounds(Strict):
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=1)
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Bounds:
        for unit in ("words", "chars", "tokens"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{unit} ({low}) is greater than max_{unit} ({high})")
        return self

    def uses_tokens(self) -> bool:
        return self.min_tokens is not None or self.max_tokens is not None


class LengthFilter(Bounds):
    """Bounds on the whole record's text, and optionally on every turn of a given role."""

    roles: dict[Literal["system", "user", "assistant"], Bounds] = {}
    tokenizer: str | None = Field(
        None, description="Local tokenizer path for token bounds; null = the bundled SmolLM2 one."
    )

    def uses_tokens(self) -> bool:
        return super().uses_tokens() or any(b.uses_tokens() for b in self.roles.values())


class KeywordFilter(Strict):
    exclude: list[str] = []
    exclude_file: str | None = Field(None, description="One phrase per line; # starts a comment.")
    refusals: bool = Field(False, description="Also drop common refusal/boilerplate phrases.")
    view: TextView = Field("all", description="Where `exclude` and `exclude_file` phrases are looked for.")
    # Refusals are something an answer says: a prompt about ChatGPT, or one quoting "as an AI
    # language model", is not one.
    refusals_view: TextView = Field("assistant", description="Where the bundled refusal phrases are looked for.")


class FormatFilter(Strict):
    json_: bool = Field(False, alias="json", description="JSON answers and ```json blocks must load.")
    code: bool = Field(False, description="Fenced python code must parse; fences must balance.")


class RepetitionFilter(Strict):
    max_dup_line_frac: float | None = Field(0.3, gt=0, le=1)
    max_top_ngram_frac: float | None = Field(0.2, gt=0, le=1)
    ngram: int = Field(2, ge=1, le=10)
    structure_aware: bool = Field(
        True,
        description="Count only degenerate repetition: a line counts as repeated inside a loop (the same line,"
        " sentence or block of up to 16 lines three or more times back to back), and the top n-gram is found"
        " with table rows set aside and each distinct line once, so a chorus between verses, a refrain or a"
        " table's rows are not counted. false: Gopher's plain counts (every line equal to an earlier one;"
        " n-grams over the whole text).",
    )
    min_words: dict[Literal["raw", "sft", "preference"], int] = Field(
        {"raw": 50, "sft": 100, "preference": 100},
        description="Per record kind: texts of the view with fewer words (markup set aside) are not checked."
        " Gopher's rules are made for documents of 50 words or more; answers repeat their nouns and numbers"
        " by design (GSM8K solutions), so conversations need more.",
    )

    @field_validator("min_words")
    @classmethod
    def _every_kind(cls, value: dict[str, int]) -> dict[str, int]:
        if any(n < 0 for n in value.values()):
            raise ValueError("word counts cannot be negative")
        return {"raw": 50, "sft": 100, "preference": 100} | value
    # Answers by default: rewrite/translate prompts legitimately repeat the user's text.
    view: TextView = "assistant"


# The ISO 639-1 codes py3langid names (its two-letter labels; tests/test_language.py checks them
# against the model), with English names for a hint when a name is written instead of a code.
LANGUAGES = dict(pair.split(":") for pair in (
    "af:afrikaans am:amharic an:aragonese ar:arabic as:assamese az:azerbaijani ba:bashkir be:belarusian"
    " bg:bulgarian bn:bengali br:breton bs:bosnian ca:catalan cs:czech cy:welsh da:danish de:german"
    " dz:dzongkha el:greek en:english eo:esperanto es:spanish et:estonian eu:basque fa:persian fi:finnish"
    " fo:faroese fr:french fy:frisian ga:irish gd:gaelic gl:galician gu:gujarati ha:hausa he:hebrew hi:hindi"
    " hr:croatian ht:haitian hu:hungarian hy:armenian id:indonesian ig:igbo is:icelandic it:italian ja:japanese"
    " jv:javanese ka:georgian kk:kazakh km:khmer kn:kannada ko:korean ku:kurdish ky:kyrgyz la:latin"
    " lb:luxembourgish lg:ganda ln:lingala lo:lao lt:lithuanian lv:latvian mg:malagasy mk:macedonian"
    " ml:malayalam mn:mongolian mr:marathi ms:malay mt:maltese my:burmese ne:nepali nl:dutch nn:nynorsk"
    " no:norwegian oc:occitan om:oromo or:oriya pa:punjabi pl:polish ps:pashto pt:portuguese qu:quechua"
    " ro:romanian ru:russian rw:kinyarwanda sa:sanskrit se:sami si:sinhala sk:slovak sl:slovenian sn:shona"
    " so:somali sq:albanian sr:serbian st:sotho sv:swedish sw:swahili ta:tamil te:telugu tg:tajik th:thai"
    " tk:turkmen tl:tagalog tr:turkish tt:tatar ug:uyghur uk:ukrainian ur:urdu uz:uzbek vi:vietnamese"
    " vo:volapuk wa:walloon xh:xhosa yo:yoruba zh:chinese zu:zulu"
).split())


class LanguageFilter(Strict):
    keep: list[str] = Field(["en"], min_length=1, description="ISO 639-1 codes of the languages to keep.")

    @field_validator("keep")
    @classmethod
    def _iso_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if code not in LANGUAGES:
                names = {name: c for c, name in LANGUAGES.items()}
                close = difflib.get_close_matches(code.strip().lower(), [*names, *LANGUAGES], 1)
                hint = f" (did you mean '{names.get(close[0], close[0])}'?)" if close else ""
                raise ValueError(f"'{code}' is not an ISO 639-1 code{hint}")
        return value
    # Measured on the decision benchmark and the shared English sets (curation/filters/language.py):
    # short texts get low, spread-out scores, so the odds against the kept languages decide.
    min_confidence: float = Field(0.2, ge=0, le=1, description="Reject only when the other language is this sure.")
    min_odds: float = Field(
        20, ge=1, description="... and this many times as likely as the most likely kept language."
    )
    view: TextView = "all"


class PlaceholderFilter(Strict):
    placeholder: bool = Field(True, description="Answers that are only <noinput>, <nooutput>, N/A or punctuation.")
    template: bool = Field(True, description="Answers holding a leaked Instruction:/Input:/Output: generation template.")


class TruncationFilter(Strict):
    min_words: int = Field(
        8, ge=1, description="A last line ending on a letter is judged only from this many words (CJK: 1.5 characters"
        " a word): shorter ones are names, titles, list items and lines of verse.",
    )


class Filters(Strict):
    # On in every filters section: such answers are junk in any data set (null = off).
    placeholders: PlaceholderFilter | None = PlaceholderFilter()
    length: LengthFilter | None = None
    keywords: KeywordFilter | None = None
    format: FormatFilter | None = None
    truncated: TruncationFilter | None = None
    repetition: RepetitionFilter | None = None
    language: LanguageFilter | None = None


Normalisation = Literal["case", "whitespace", "punctuation"]


class ExactDedup(Strict):
    normalize: list[Normalisation] = ["case", "whitespace", "punctuation"]
    view: TextView = "all"


class MinHashDedup(Strict):
    threshold: float = Field(0.8, gt=0, lt=1)
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1, le=20)
    verify: bool = Field(True, description="Confirm LSH candidates by true Jaccard.")
    view: TextView = "all"


class SemanticDedup(Strict):
    threshold: float = Field(0.9, gt=0, le=1)
    model: str | None = Field(
        None,
        description="minilm-static (the default: a model2vec static model distilled from the bundled"
        " all-MiniLM-L6-v2), all-MiniLM-L6-v2 (the bundled transformer), or a local directory holding"
        " a sentence-transformers or model2vec model.",
    )
    batch_size: int | None = Field(None, ge=1, description="Texts per encoder batch; null = 1024 static, 64 transformer.")
    max_seq_length: int | None = Field(
        None,
        ge=8,
        description="Tokens embedded per text (its beginning); null = the whole text for the static encoder,"
        " the model's limit (256) for the transformer.",
    )
    search: Literal["auto", "exact", "ivf"] = Field(
        "auto", description="auto: exhaustive up to 65,536 kept records, a re-scored IVF index beyond."
    )
    view: TextView = Field("no_system", description="no_system: a shared system prompt says nothing of a record.")
    shared_lines: float | None = Field(
        0.01,
        gt=0,
        le=1,
        description="Lines found in at least this share (and 3) of the first 10,000 records - shared"
        " preambles, tool lists - are left out of the text embedded (unless nothing else is left); null = embed as is.",
    )
    verify: bool = Field(
        True,
        description="Read each candidate pair (cosine >= threshold) and keep both records when the words that"
        " differ change the task: a contrast (ascending / descending), another programming language, other"
        " numbers, a swapped direction (curation/dedup/verify.py); false = the cosine alone decides.",
    )


class Dedup(Strict):
    exact: ExactDedup | None = None
    minhash: MinHashDedup | None = None
    semantic: SemanticDedup | None = None


PiiKind = Literal["email", "phone", "ip", "credit_card", "secret"]


class PiiConfig(Strict):
    action: Literal["redact", "drop"] = Field(
        "redact", description="redact: typed placeholders, the record kept; drop: reject it (stored redacted)."
    )
    kinds: list[PiiKind] = ["email", "phone", "ip", "credit_card", "secret"]
    skip_code: bool = Field(
        True, description="Phone numbers, IP addresses and card numbers inside code (fences, `spans`, reST "
        "literal blocks) are left alone: constants, versions, test data. Secrets and e-mails are redacted there too."
    )
    keep_documentation: bool = Field(
        True, description="E-mail addresses at documentation domains (example.com, *.example, *.test, "
        "*.invalid, *.localhost; example-domain.com, yourdomain.com) are left alone."
    )


class Benchmark(InputSpec):
    """A benchmark file, read like an input (format, shape, columns, txt_split): any file ingest reads."""

    name: str | None = Field(None, description="How rejects and the report name it; null = the file stem.")
    view: TextView = Field("all", description="Which turns of a benchmark item are checked.")


class SemanticContamination(Strict):
    """Rephrased benchmark items: a record within `threshold` cosine of a benchmark text."""

    # Measured with the static default on SmolLM2 rewrites of GSM8K/MT-Bench items (BENCHMARKS.md).
    threshold: float = Field(0.85, gt=0, le=1)
    model: str | None = Field(None, description="As dedup.semantic.model (null = the bundled static model).")
    max_seq_length: int | None = Field(128, ge=8)
    batch_size: int | None = Field(None, ge=1)


class Decontamination(Strict):
    benchmarks: list[Benchmark] = Field(min_length=1)
    ngram: int = Field(13, ge=3, le=50, description="Word n-grams after normalisation.")
    min_coverage: float = Field(
        0.5, gt=0, le=1, description="Share of a benchmark text's words inside n-grams the record shares with it."
    )
    min_words: int = Field(
        6, ge=1, description="Benchmark texts with fewer distinct words are not checked; up to ngram - 1 words must appear whole."
    )
    view: TextView = "all"
    semantic: SemanticContamination | None = None

    @model_validator(mode="after")
    def _names_unique(self) -> Decontamination:
        for b in self.benchmarks:
            b.name = b.name or Path(b.path).stem
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmarks: names must be unique, got {names} (set name:)")
        return self


class CurateConfig(Strict):
    inputs: list[InputSpec] = Field(min_length=1)
    pii: PiiConfig | None = None
    filters: Filters | None = None
    decontamination: Decontamination | None = None
    dedup: Dedup | None = None
    synthesis: SynthesisConfig | None = None
    jury: JuryConfig | None = None
    preference: PreferenceConfig | None = None
    select: SelectConfig | None = None
    export: ExportConfig | None = None
    validation: ValidationConfig | None = None
    publish: PublishConfig | None = None
    train: TrainConfig | None = None
    execution: ExecutionConfig = ExecutionConfig()
    _base_dir: Path | None = PrivateAttr(None)  # the config file's folder (load_config)

    @property
    def base_dir(self) -> Path | None:
        """The folder relative paths (and records' `source`) are relative to; None = the working directory."""
        return self._base_dir

    @model_validator(mode="after")
    def _score_range_follows_the_jury(self) -> CurateConfig:
        if self.validation and self.jury and "score_range" not in self.validation.model_fields_set:
            self.validation.score_range = (1, self.jury.scale_max)
        return self

    @model_validator(mode="after")
    def _preference_has_a_ranking(self) -> CurateConfig:
        pref = self.preference
        if pref is None:
            return self
        if pref.ranking not in ("human", "source") and self.jury is None:
            raise ValueError(
                f"preference.ranking '{pref.ranking}' rates candidates with the jury: add a `jury:`"
                " section, or set ranking: human (oasst ranks only) or ranking: source (with source_order)"
            )
        if pref.pairwise and self.jury is None:
            raise ValueError("preference.pairwise compares answers with the jury's models: add a `jury:` section")
        c = pref.candidates
        if not (c.existing or c.generators or c.local_temperatures):
            raise ValueError("preference.candidates: no source of answers (existing, generators, local_temperatures)")
        return self

    @model_validator(mode="after")
    def _select_signals_exist(self) -> CurateConfig:
        """Every weighted signal can be computed by this run. No `score` = the jury's score with a
        jury section rating sft records, else no score (records in id order: a content hash, so a
        deterministic sample)."""
        select = self.select
        if select is None:
            return self
        score = select.score
        if not score.weights() and self.jury and "sft" in self.jury.kinds and "score" not in select.model_fields_set:
            score.jury = 1.0
        if score.jury is not None and self.jury is None:
            raise ValueError("select.score.jury weighs the jury's score: add a `jury:` section, or drop the weight")
        if score.jury is not None and "sft" not in self.jury.kinds:  # type: ignore[union-attr]
            raise ValueError("select.score.jury weighs the jury's score, but jury.kinds does not rate sft records")
        if score.ifd is not None and select.ifd is None:
            raise ValueError("select.score.ifd weighs IFD: add `select.ifd: {}` (the training base model), or drop the weight")
        if select.ifd is not None and score.ifd is None:
            raise ValueError("select.ifd computes IFD that no weight uses: set select.score.ifd, or remove select.ifd")
        return self

    @model_validator(mode="after")
    def _export_matches_training(self) -> CurateConfig:
        """Training reads the exported sets, so export must render and measure them the same way.

        With a train section, export is on (defaults when absent); its tokenizer, length budget
        and overlength rule follow train's unless set, and a set value that disagrees is an error.
        """
        if self.train is None:
            return self
        if self.export is None:
            self.export = ExportConfig()
        export, train = self.export, self.train
        if "win_rate" in train.select_by and self.jury is None:
            raise ValueError("train.select_by: win_rate is judged by the jury's models: add a `jury:` section")
        follows = {
            "max_seq_length": (train.max_seq_length, "max_seq_length"),
            "overlength": ({"truncate": "truncate", "drop": "drop"}[train.truncation], "truncation"),
            "chat_template": (train.chat_template, "chat_template"),
        }
        for field, (value, train_field) in follows.items():
            if field not in export.model_fields_set:
                setattr(export, field, value)
            elif getattr(export, field) != value and train_field in train.model_fields_set:
                raise ValueError(
                    f"export.{field} ({getattr(export, field)}) disagrees with train.{train_field}"
                    f" ({value}): training reads the exported sets, so set one value"
                )
        train.chat_template = export.chat_template
        if export.tokenizer is None:
            export.tokenizer = train.base_model
        return self


# The bundled prompt files live with the stages that use them (curation/resources).
RESOURCES = Path(__file__).resolve().parents[1] / "curation" / "resources"
# A location given as a URL, protocol://key (curation.core.storage opens them); file:// and
# local:// name local paths.
URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", re.DOTALL)
LOCAL_PROTOCOLS = ("file", "local")


def read_config(path: str | Path) -> CurateConfig:
    """Read, validate and resolve a config file; raise ConfigError with a readable message.
    The paths it names are checked by curation.core.inputs.load_config (training, which reads
    no input, takes the config as read here)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(decode_text(path.read_bytes(), str(path)))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        config = CurateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config\n" + format_errors(exc)) from None
    return resolve_paths(config, path.parent)


def format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = yaml_path(err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            message = "required field is missing"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def yaml_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("json" if part == "json_" else str(part))
    return out


def resolve_paths(config: CurateConfig, base: Path) -> CurateConfig:
    """Make input and file paths absolute (relative to `base`, the config's folder)."""
    config._base_dir = Path(base).resolve()
    benchmarks = config.decontamination.benchmarks if config.decontamination else []
    for spec in [*config.inputs, *benchmarks]:
        spec.path = resolve_path(spec.path, base)
    keywords = config.filters.keywords if config.filters else None
    if keywords and keywords.exclude_file:
        keywords.exclude_file = resolve_path(keywords.exclude_file, base)
    for _, spec in model_specs(config):
        if spec.local and spec.local.path:
            spec.local.path = resolve_path(spec.local.path, base)
    if config.jury:
        for judge in config.jury.judges:
            judge.rubric = _prompt_file(judge.rubric, "rubrics", base)
        if config.jury.cache_dir:
            config.jury.cache_dir = resolve_path(config.jury.cache_dir, base)
    if config.preference and config.preference.pairwise:
        pairwise = config.preference.pairwise
        pairwise.rubric = _prompt_file(pairwise.rubric, "rubrics", base)
    if config.synthesis:
        config.synthesis.template = _prompt_file(config.synthesis.template, "prompts", base)
    if config.export and config.export.tokenizer:
        config.export.tokenizer = resolve_path(config.export.tokenizer, base)
    if config.publish:
        config.publish.dir = resolve_path(config.publish.dir, base)
    if config.train and config.train.base_model:
        config.train.base_model = resolve_path(config.train.base_model, base)
    if config.select and config.select.ifd and config.select.ifd.model:
        config.select.ifd.model = resolve_path(config.select.ifd.model, base)
    for candidate in config.train.candidates if config.train else []:
        if isinstance(candidate.get("base_model"), str):
            candidate["base_model"] = resolve_path(candidate["base_model"], base)
    return config


def model_specs(config: CurateConfig) -> list[tuple[str, ModelSpec]]:
    specs = []
    if config.jury:
        specs += [(f"jury.judges[{i}].model", j.model) for i, j in enumerate(config.jury.judges)]
    if config.synthesis:
        specs.append(("synthesis.generator", config.synthesis.generator))
    if config.preference:
        specs += [(f"preference.candidates.generators[{i}]", g) for i, g in enumerate(config.preference.candidates.generators)]
    return specs


def bundled_prompt(value: str, folder: str) -> bool:
    return (RESOURCES / folder / f"{value}.jinja").is_file()


def _prompt_file(value: str, folder: str, base: Path) -> str:
    """A bundled prompt name stays a name; a file relative to the config becomes its path (what
    is neither stays as written, for the check to name it)."""
    if bundled_prompt(value, folder):
        return value
    path = resolve_path(value, base)
    return path if Path(path).is_file() else value


def resolve_path(value: str, base: Path) -> str:
    """A URL normalised (protocol lower-cased, no outer slashes), else an absolute local path."""
    match = URL.match(value)
    if match and match.group(1).lower() not in LOCAL_PROTOCOLS:
        return f"{match.group(1).lower()}://{match.group(2).strip('/')}"
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def decode_text(data: bytes, where: str) -> str:
    """A whole text file (the config) decoded by `text_encoding`; ConfigError naming the line when
    it is not valid in its own encoding."""
    encoding = text_encoding(data, whole=True) or "ascii"
    try:
        return data.decode(encoding, CP1252_FILL)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, "replace").count("\n") + 1
        raise ConfigError(f"{where}: line {line} is not valid {encoding} ({exc.reason})") from None


CP1252_FILL = "curate.cp1252_fill"


def _cp1252_fill(exc: UnicodeError) -> tuple[str, int]:
    """The five bytes cp1252 leaves undefined read as Latin-1 (C1 controls): a cp1252 or Latin-1
    text always decodes. Strict for any other codec."""
    if not isinstance(exc, UnicodeDecodeError) or exc.encoding not in ("cp1252", "charmap"):
        raise exc
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(CP1252_FILL, _cp1252_fill)


def text_encoding(head: bytes, whole: bool) -> str | None:
    """The codec of text that begins with `head` (all of it when `whole`): its byte order mark's;
    UTF-16 without one when every other byte is NUL; else utf-8 when its non-ASCII lines read as
    UTF-8 (at least as many as not: a few bad lines do not turn a UTF-8 file into cp1252, and
    cp1252 text almost never reads as UTF-8), else cp1252
    (which covers Latin-1). None while `head` is all ASCII: the first non-ASCII text decides."""
    for bom, name in BOMS:
        if head.startswith(bom):
            return name
    if len(head) >= 4:
        even, odd = head[0::2].count(0) / len(head[0::2]), head[1::2].count(0) / len(head[1::2])
        if min(even, odd) < 0.05 < 0.5 < max(even, odd):  # ASCII characters in UTF-16: one NUL each
            return "utf-16-le" if odd > even else "utf-16-be"
    if head.isascii():
        return None
    lines = head.splitlines()
    valid = invalid = 0
    for i, line in enumerate(lines):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            valid += 1
        except UnicodeDecodeError as exc:
            cut = not whole and i == len(lines) - 1 and exc.reason == "unexpected end of data"
            valid, invalid = (valid + 1, invalid) if cut else (valid, invalid + 1)
    return "utf-8" if valid >= invalid else "cp1252"

