"""The chat-template translation for Ollama Modelfiles: what it covers becomes
Go text/template (rendered and compared with transformers by Go itself in
tests/trainer/test_export_formats.py), what it does not is refused by name."""
from __future__ import annotations

import pytest

from kubetune_trainer.exporters.ollama_template import PRELUDE, Unsupported, to_go_template

TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def go(source: str) -> str:
    return to_go_template(source, TOKENS).removeprefix(PRELUDE)


def test_loop_roles_content_and_generation_prompt():
    source = ("{{ bos_token }}{% for m in messages %}{% if m['role'] in ['system', 'user'] %}[{{ m.role }}] {{ m['content'] }}"
              "{% elif not loop.last %}{{ m.content + eos_token }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}[assistant]{% endif %}")
    assert go(source) == (
        '{{ "<s>" }}{{ range $i, $m := $.Messages }}{{ if (or (eq $m.Role "system") (eq $m.Role "user")) }}[{{ $m.Role }}] '
        '{{ $m.Content }}{{ else if (not (eq (len (slice $.Messages $i)) 1)) }}{{ $m.Content }}{{ "</s>" }}{{ end }}{{ end }}'
        '{{ if $gen }}[assistant]{{ end }}')


def test_a_fixed_message_s_fields_as_smollm2_asks_for_a_system_turn():
    # SmolLM2's template writes its default system turn unless the first message is one.
    source = "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}[default]{% endif %}{{ m.content }}{% endfor %}"
    assert go(source) == ('{{ range $i, $m := $.Messages }}{{ if (and (eq $i 0) (ne (index $.Messages 0).Role "system")) }}[default]'
                          '{{ end }}{{ $m.Content }}{{ end }}')


def test_whitespace_control_is_applied_as_transformers_parses_it():
    # trim_blocks and lstrip_blocks, then nothing trims again in Go.
    assert go("{% for m in messages %}\n  <{{ m.role }}>\n{% endfor %}") == "{{ range $i, $m := $.Messages }}  <{{ $m.Role }}>\n{{ end }}"
    # Every literal "{" is an action of its own, so no two pieces can join into a Go action.
    assert go("{% raw %}{{{% endraw %}").endswith('{{ "{" }}{{ "{" }}')


@pytest.mark.parametrize("source,named", [
    ("{{ messages[0]['content'] | trim }}", "Filter"),
    ("{% set x = 1 %}", "Assign"),
    ("{% for t in tools %}{% endfor %}", "for loop over anything but messages"),
    ("{{ date_string }}", "'date_string'"),
    ("{% for m in messages %}{{ loop.index }}{% endfor %}", "loop.index"),
    ("{% if messages[0]['role'] is defined %}{% endif %}", "Test"),
    ("{{ messages[-1]['content'] }}", "an expression.content"),  # Go's index takes no negative position
])
def test_what_is_not_covered_is_refused_by_name(source, named):
    with pytest.raises(Unsupported, match=named):
        to_go_template(source, TOKENS)
