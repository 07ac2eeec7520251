"""Export: the kept records as chat-formatted training sets, checked, measured and documented.

Writes into the run's `export/` folder:

    alpaca.json, sharegpt.json, openai.jsonl   sft records (Alpaca: single-turn ones only)
    preference.jsonl                           TRL's explicit conversational preference form
    preference_llamafactory.json               the same pairs as LLaMA-Factory ShareGPT ranking rows
    hf/sft, hf/preference                      datasets.DatasetDict (seeded train/test split)
    dataset_info.json, axolotl.yaml            how LLaMA-Factory and Axolotl load the files
    README.md                                  dataset card

Every record of an exported kind is checked before anything is written. One that breaks a rule
becomes a reject of stage "export" and leaves the kept set, so ingested == kept + rejected holds:

    empty_conversation     no turns (a preference row without a prompt or an answer)
    empty_turn             a turn with blank content
    roles_not_alternating  after an optional first system turn, user and assistant alternate; a
                           tool turn may take the user's place right after an assistant turn
    wrong_final_role       a conversation must end with an answer, a preference prompt with a user turn
    same_chosen_rejected   chosen and rejected say the same
    special_token          a turn holds one of the tokenizer's special tokens (`special_tokens: reject`,
                           the default; `escape` breaks the token instead)
    template_error         the chat template refuses the conversation (Mistral: tool turns)
    too_long               over max_seq_length tokens with `overlength: drop`; with `truncate`, only
                           rows whose prompt alone fills the window (no answer token left to learn)

Records of a kind no selected format takes (raw text; preference rows when `preference` is not
selected) stay kept and are counted as not exported. Token lengths use the rendering TRL trains
on: the chat template applied with `tokenize=False`, then tokenized without special tokens.

Laid out by job:

    checks.py      the rules above but too_long and template_error (record_problem)
    render.py      chat-template rendering, token counts, the too_long and template_error checks
    special.py     the tokenizer's special tokens in the data: rejected or escaped
    formats.py     each file's row shape and how it is written
    hf.py          the hf/ DatasetDicts and their train/test split
    consumers.py   dataset_info.json (LLaMA-Factory) and axolotl.yaml
    card.py        README.md, the dataset card
    stage.py       export_run, the stage that runs all of the above
"""

from curation.export.formats import FILES, LLAMAFACTORY_PREFERENCE
from curation.export.hf import split
from curation.export.render import render, token_counts
from curation.export.stage import export_run

__all__ = ["FILES", "LLAMAFACTORY_PREFERENCE", "export_run", "render", "split", "token_counts"]
