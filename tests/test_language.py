"""Language identification on real English instruction data and on multilingual samples
written for this test: other languages are removed with language and confidence named, English
(short instructions and code included) is kept, and the language mix is counted."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation.core.run import run_pipeline
from curation.filters.language import detect
from curation.report.html import write_report
from schemas.config import CurateConfig, LanguageFilter

# (language, instruction, answer): everyday requests, as a multilingual chat set would hold them.
FOREIGN = [
    ("de", "Wie backe ich einen einfachen Apfelkuchen?",
     "Mische Mehl, Zucker, Butter und Eier, lege die Äpfel darauf und backe ihn eine Stunde lang."),
    ("fr", "Peux-tu m'expliquer pourquoi le ciel est bleu ?",
     "La lumière du soleil est diffusée par les molécules de l'air, et le bleu est diffusé davantage que le rouge."),
    ("es", "¿Cuál es la mejor manera de aprender a programar?",
     "Empieza con un lenguaje sencillo, escribe pequeños programas todos los días y lee el código de otras personas."),
    ("it", "Come posso migliorare la qualità del mio sonno?",
     "Vai a letto sempre alla stessa ora, evita il caffè la sera e tieni la camera fresca e buia."),
    ("pt", "Quais são os benefícios de beber água regularmente?",
     "A água ajuda a regular a temperatura do corpo, melhora a digestão e mantém a pele saudável."),
    ("ru", "Как правильно заваривать зелёный чай?",
     "Нагрейте воду примерно до восьмидесяти градусов и заваривайте чай не дольше трёх минут."),
    ("zh", "请介绍一下长城的历史。", "长城始建于两千多年前，历代王朝不断修建，用来抵御北方游牧民族的入侵。"),
    ("ja", "日本でおすすめの観光地を教えてください。",
     "京都の古いお寺や、東京の賑やかな街並み、北海道の美しい自然がおすすめです。"),
    ("ar", "ما هي فوائد ممارسة الرياضة يوميا؟", "تساعد الرياضة على تقوية القلب وتحسين المزاج والنوم وتقليل التوتر."),
]
# A Chinese answer to an English prompt: a language problem only in the answer.
MIXED = {
    "instruction": "Translate 'good morning, how are you today?' into Chinese.",
    "output": "早上好，你今天好吗？我希望你今天过得很愉快。",
}


def _run(tmp_path: Path, rows: list[dict], language: dict) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    tmp_path.mkdir()
    data = tmp_path / "in.json"
    data.write_text(json.dumps(rows, ensure_ascii=False))
    config = CurateConfig.model_validate({"inputs": [{"path": str(data)}], "filters": {"language": language}})
    stats = run_pipeline(config, tmp_path / "run")
    assert stats.invariant.holds
    kept, rejected = (pl.read_parquet(tmp_path / "run" / f"{name}.parquet") for name in ("kept", "rejected"))
    return kept, rejected, stats.stages[-1].model_dump()


def test_other_languages_are_removed_and_english_kept(tmp_path: Path, public_data: Path) -> None:
    # 200 English Alpaca-shaped rows: 100 code instructions (GPTeacher), 100 GSM8K problems.
    code = json.loads((public_data / "sft" / "gpteacher_codegen_instruct.json").read_text())[:100]
    gsm8k = [json.loads(line) for line in (public_data / "sft" / "gsm8k_test.jsonl").open()][:100]
    english = [{"instruction": r["instruction"], "input": r["input"], "output": r["response"]} for r in code]
    english += [{"instruction": r["question"], "output": r["answer"]} for r in gsm8k]
    foreign = [{"instruction": q, "output": a} for _, q, a in FOREIGN]
    kept, rejected, filters = _run(tmp_path / "a", english + foreign + [MIXED], {"keep": ["en"]})
    by_source = rejected.sort("source")
    assert by_source["reason"].unique().to_list() == ["wrong_language"]
    detected = [d.split(" ")[0] for d in by_source["detail"]]
    assert detected[: len(FOREIGN)] == [lang for lang, _, _ in FOREIGN]
    assert "(confidence " in by_source["detail"][0] and "keep en, view all" in by_source["detail"][0]
    assert rejected.height <= len(FOREIGN) + 1 and kept.height >= len(english)  # no English lost
    mix = filters["languages"]
    assert mix["en"] >= 195 and all(mix.get(lang, 0) >= 1 for lang, _, _ in FOREIGN)
    html = write_report(tmp_path / "a" / "run").read_text()
    assert "Language mix" in html and "<td>zh</td>" in html

    # Per role: the user view keeps the Chinese answer to an English prompt, the assistant view drops it.
    kept_user, _, _ = _run(tmp_path / "u", [MIXED, english[0]], {"keep": ["en"], "view": "user"})
    _, rejected_answers, _ = _run(tmp_path / "s", [MIXED, english[0]], {"keep": ["en"], "view": "assistant"})
    assert kept_user.height == 2 and rejected_answers["detail"].to_list() == [rejected_answers["detail"][0]]
    assert rejected_answers["detail"][0].startswith("zh ")
    # keep: several languages.
    kept_de, _, _ = _run(tmp_path / "d", foreign[:2], {"keep": ["en", "de"]})
    assert kept_de.height == 1


def test_english_instruction_sets_are_kept(public_data: Path) -> None:
    """Near-zero false rejects at the default confidence on over a thousand short English texts,
    code and math included: the instructions of GPTeacher Codegen, GSM8K, Self-Instruct and the
    user turns of the English oasst trees."""
    names = ["gpteacher_codegen_instruct.json", "gsm8k_test.jsonl", "selfinstruct_user_oriented_252.jsonl"]
    texts = []
    for name in names:
        path = public_data / "sft" / name
        rows = json.loads(path.read_text()) if name.endswith(".json") else [json.loads(x) for x in path.open()]
        texts += [r.get("instruction") or r.get("question") for r in rows]

    def user_turns(message: dict) -> list[str]:
        own = [message["text"]] if message["role"] == "prompter" else []
        return own + [t for reply in message.get("replies", []) for t in user_turns(reply)]

    for line in (public_data / "sft" / "oasst_en_100_tree.jsonl").open():
        texts += user_turns(json.loads(line)["prompt"])
    defaults = LanguageFilter()
    found = detect(texts, ["en"])
    wrong = [
        t for t, (lang, p, odds) in zip(texts, found, strict=True)
        if lang not in ("en", "zxx") and p >= defaults.min_confidence and odds >= defaults.min_odds
    ]
    assert len(texts) > 1400 and len(wrong) <= 1, wrong


def test_short_texts_are_undecided_unless_the_odds_say_otherwise(tmp_path: Path) -> None:
    """The undecided band: a short text is removed on its odds against English, not on a winner
    that is sure of nothing; text without language (a hash) is never another language."""
    english = ["yes", "Thanks!", "Sure, go for it!", "Sweets, Chocolate, Onions", "Very Good",
               "e3a82186438a9a2ef80c2a3fdba0182fb9b2d5f1"]
    foreign = ["¿Qué es Unity?", "¿Existe una ética universal?", "谢谢", "只有一个地球", "Wat zijn herkauwers?"]
    kept, rejected, filters = _run(tmp_path / "a", [{"text": t} for t in english + foreign], {"keep": ["en"]})
    assert sorted(kept["text"].to_list()) == sorted(english)
    assert sorted(rejected["text"].to_list()) == sorted(foreign)
    assert "x en; keep en, view all: text)" in rejected["detail"][0]
    assert filters["languages"]["none"] == 1  # the hash
    # min_confidence: 0.5 and min_odds: 1 give back the old rule, which kept most of them.
    old_rule = {"keep": ["en"], "min_confidence": 0.5, "min_odds": 1}
    _, old, _ = _run(tmp_path / "b", [{"text": t} for t in foreign], old_rule)
    assert old.height == 1


def test_view_all_keeps_translation_tasks_and_drops_foreign_conversations(tmp_path: Path) -> None:
    """A conversation goes only when one side is another language and neither side a kept one."""
    rows = [
        {"instruction": "Translate into French: The museum opens at nine and closes at six.",
         "output": "Le musée ouvre à neuf heures et ferme à dix-huit heures."},
        {"instruction": "Le musée ouvre à neuf heures et ferme à dix-huit heures, sauf le lundi.\n\nTranslate to English.",
         "output": "The museum opens at nine and closes at six, except on Mondays."},
        {"instruction": "¿Cuál es la mejor manera de aprender a programar?",
         "output": "Empieza con un lenguaje sencillo y escribe pequeños programas todos los días."},
        {"instruction": "Hola", "output": "¡Hola! ¿En qué puedo ayudarte hoy? Puedo responder preguntas y escribir textos."},
    ]
    kept, rejected, _ = _run(tmp_path / "a", rows, {"keep": ["en"]})
    assert kept.height == 2 and rejected.height == 2
    details = rejected.sort("source")["detail"].to_list()
    assert details[0].startswith("es ") and details[0].endswith("view all: user turns)")
    assert details[1].startswith("es ") and details[1].endswith("view all: answers)")


def test_keep_takes_only_the_iso_codes_the_identifier_names(tmp_path: Path) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from curation.core.inputs import load_config
    from schemas.config import LANGUAGES, ConfigError

    labels = LanguageIdentifier.from_model_file(MODEL_FILE).nb_classes
    assert set(LANGUAGES) == {code for code in labels if len(code) == 2}  # the config's list is the model's
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    config = tmp_path / "c.yaml"
    for keep, hint in (("english", " (did you mean 'en'?)"), ("EN", " (did you mean 'en'?)"), ("xx", "")):
        config.write_text(f"inputs: [{{path: in.jsonl}}]\nfilters: {{language: {{keep: [de, {keep}]}}}}\n")
        with pytest.raises(ConfigError) as error:
            load_config(config)
        assert str(error.value).endswith(f"  filters.language.keep: '{keep}' is not an ISO 639-1 code{hint}")
    config.write_text("inputs: [{path: in.jsonl}]\nfilters: {language: {keep: [en, fr, zh]}}\n")
    assert load_config(config).filters.language.keep == ["en", "fr", "zh"]
