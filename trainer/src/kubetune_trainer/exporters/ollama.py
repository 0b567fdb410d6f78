"""An Ollama Modelfile beside the GGUF file (`<output uri>/gguf/Modelfile`):
`ollama create NAME -f Modelfile` in a copy of that directory makes the model.

TEMPLATE is the tokenizer's chat template translated to Go's text/template
(`ollama_template`); PARAMETER stop lists the end-of-sequence token and the
control tokens the template writes (a turn's end, the next turn's header), so
generation stops where the chat format says a reply ends.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..storage import join
from .failures import ExportFailed
from .gguf import gguf_name
from .ollama_template import Unsupported, to_go_template

if TYPE_CHECKING:
    from .inputs import ExportInputs


def export(inputs: ExportInputs) -> dict[str, str]:
    gguf = gguf_name(inputs.cfg.output.gguf.quantization)
    if not (inputs.scratch / "gguf" / gguf).is_file():
        raise ExportFailed("ollama", "the Modelfile points at the GGUF file, which was not exported (see gguf)")
    text = modelfile(inputs.tokenizer, gguf)
    key = "gguf/Modelfile"
    inputs.output.put_bytes(key, text.encode())
    return {"ollama": join(inputs.output.uri, key)}


def modelfile(tokenizer, gguf_file: str) -> str:
    source = tokenizer.chat_template
    if not isinstance(source, str) or not source:
        raise ExportFailed("ollama", "the tokenizer has no chat template to make the Modelfile's TEMPLATE from")
    tokens = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    try:
        template = to_go_template(source, tokens)
    except Unsupported as exc:
        raise ExportFailed("ollama", f"the chat template uses {exc}, which the Modelfile translation does not cover") from None
    if '"""' in template:
        raise ExportFailed("ollama", 'the chat template contains """, which a Modelfile TEMPLATE cannot hold')
    lines = [f"FROM ./{gguf_file}", f'TEMPLATE """{template}"""']
    lines += [f"PARAMETER stop {_quote(token)}" for token in stop_tokens(tokenizer)]
    return "\n".join(lines) + "\n"


# A conversation with every role, rendered to find which control tokens the template writes.
PROBE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
CONTROL = re.compile(r"^<\|[^|\s]+\|>$")


def stop_tokens(tokenizer) -> list[str]:
    """The end-of-sequence token, then every other control token (special, added,
    or `<|...|>`-shaped) the template writes around turns."""
    try:
        rendered = tokenizer.apply_chat_template(PROBE, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses a system turn: try without one
        rendered = tokenizer.apply_chat_template(PROBE[1:], tokenize=False)
    vocab = tokenizer.get_vocab()
    candidates = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab(), *(t for t in vocab if CONTROL.match(t))}
    skip = {tokenizer.bos_token, tokenizer.pad_token, tokenizer.unk_token, None, ""}
    written = sorted(t for t in candidates - skip if t in rendered)
    return list(dict.fromkeys([t for t in (tokenizer.eos_token,) if t] + written))


def _quote(token: str) -> str:
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'
