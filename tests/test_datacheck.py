import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mlx_tune import UserError
from mlx_tune.cli import main
from mlx_tune.data.datacheck import (
    dataset_stats,
    load_checked,
    percentiles,
    templated_messages,
    tier,
    token_length,
    validate_files,
)
from mlx_tune.data.merge import merge_files
from mlx_tune.fileio import write_jsonl

# A chat template that renders tools and tool calls (arguments via tojson, as Qwen2.5's does).
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    '{% for c in m.tool_calls or [] %}<tool_call>{"name": "{{ c.function.name }}", '
    '"arguments": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n{% endfor %}'
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer with a chat template, saved like a model's tokenizer."""
    from conftest import make_records
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([json.dumps(r) for r in make_records(30)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(out)
    return out


def test_validate_ok_and_problems(tmp_path, sample_records):
    write_jsonl(tmp_path / "ok.jsonl", sample_records(6))
    r = CliRunner().invoke(main, ["data", "validate", str(tmp_path / "ok.jsonl")])
    assert r.exit_code == 0 and r.output.strip() == "6 records OK"

    recs = sample_records(4)
    recs[1]["meta"]["category"] = "grep"  # record 1 answers with a read call
    recs[2]["messages"][-1]["content"] = ""
    lines = [json.dumps(r) for r in recs] + ["[1, 2]", "{oops"]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(
        main, ["data", "validate", str(tmp_path / "ok.jsonl"), str(tmp_path / "bad.jsonl")]
    )
    assert r.exit_code == 1
    bad = tmp_path / "bad.jsonl"
    assert f"{bad}:2: meta.category: says 'grep' but the answer is 'read'" in r.output
    assert f"{bad}:3: messages[2].content: missing or empty" in r.output
    assert f"{bad}:5: record: expected an object" in r.output
    assert f"{bad}:6: record: not valid JSON" in r.output
    assert "4 problems" in r.output and "Traceback" not in r.output


def test_validate_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        validate_files([tmp_path / "nope.jsonl"])
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match=r"e.jsonl: empty: no records"):
        validate_files([tmp_path / "e.jsonl"])
    with pytest.raises(UserError, match="--max-seq-length needs --model"):
        validate_files([tmp_path / "e.jsonl"], max_seq_length=10)
    with pytest.raises(UserError, match="--model: cannot load a tokenizer"):
        validate_files([tmp_path / "e.jsonl"], model=tmp_path / "no-model")


def test_token_lengths(tmp_path, sample_records, tokenizer_dir):
    recs = sample_records(6)
    recs[4]["messages"][-1]["content"] = "word " * 400
    write_jsonl(tmp_path / "d.jsonl", recs)
    assert validate_files([tmp_path / "d.jsonl"], model=tokenizer_dir, max_seq_length=100_000) == 6
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    limit = max(token_length(tok, r) for i, r in enumerate(recs) if i != 4) + 1
    assert token_length(tok, recs[4]) > limit + 300
    r = CliRunner().invoke(
        main,
        [
            "data",
            "validate",
            str(tmp_path / "d.jsonl"),
            "--model",
            str(tokenizer_dir),
            "--max-seq-length",
            str(limit),
        ],
    )
    assert r.exit_code == 1, r.output
    assert (
        f"{tmp_path / 'd.jsonl'}:5: messages:" in r.output
        and f"longer than --max-seq-length {limit}" in r.output
    )
    assert r.output.count("longer than") == 1

    # JSON-string arguments (as mlx-lm's docs write them) are templated as objects, not as a
    # double-encoded string
    fn = recs[0]["messages"][-1]["tool_calls"][0]["function"]
    fn["arguments"] = json.dumps(fn["arguments"])
    msgs = templated_messages(recs[0])
    assert isinstance(msgs[-1]["tool_calls"][0]["function"]["arguments"], dict)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = tok.apply_chat_template(msgs, tools=recs[0]["tools"], tokenize=False)
    assert '"arguments": {"pattern"' in text
    assert token_length(tok, recs[0]) == len(tok(text, add_special_tokens=False)["input_ids"])


def test_stats_file_and_phase_dir(tmp_path, sample_records, tokenizer_dir):
    recs = sample_records(60)
    for r in recs[:40]:
        r["meta"]["origin"] = "real"
    write_jsonl(tmp_path / "all.jsonl", recs)
    s = dataset_stats(tmp_path / "all.jsonl")
    assert s["records"] == 60 and s["category"] == {"direct": 20, "grep": 20, "read": 20}
    assert s["origin"] == {"real": 40, "synthetic": 20}
    assert s["tool_share"] == pytest.approx(2 / 3, abs=1e-3) and s["direct_share"] == pytest.approx(
        1 / 3, abs=1e-3
    )
    assert s["tier"] == "infrastructure testing only"
    assert len(s["warnings"]) == 1 and "33% of records are synthetic" in s["warnings"][0]
    assert "tokens" not in s

    merge_files([tmp_path / "all.jsonl"], tmp_path / "phase", valid=0.2, test=0.1, seed=0)
    s = dataset_stats(tmp_path / "phase", model=tokenizer_dir)
    assert set(s["splits"]) == {"train", "valid", "test"}
    assert sum(x["records"] for x in s["splits"].values()) == 60
    t = s["tokens"]
    assert 0 < t["p50"] <= t["p90"] <= t["p99"] <= t["max"]

    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "phase"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["records"] == 60
    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "phase")])
    assert r.exit_code == 0
    assert "60 records, tier: infrastructure testing only" in r.output and "train:" in r.output
    assert "warning: 33% of records are synthetic" in r.output


def test_stats_errors(tmp_path):
    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path)])
    assert r.exit_code == 1 and "no train.jsonl" in r.output
    (tmp_path / "x.jsonl").write_text('{"messages": []}\n')
    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 1 and "x.jsonl:1: messages: missing or empty" in r.output


def test_tiers_and_percentiles():
    assert [tier(n) for n in (0, 49, 50, 99, 100, 199, 200, 499, 500, 999, 1000, 10**6)] == [
        "too small",
        "too small",
        "infrastructure testing only",
        "infrastructure testing only",
        "small: infrastructure testing",
        "small: infrastructure testing",
        "minimal viable",
        "minimal viable",
        "research prototype",
        "research prototype",
        "publication scale",
        "publication scale",
    ]
    assert percentiles(list(range(1, 11))) == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {"p50": 0, "p90": 0, "p99": 0, "max": 0}


def test_merged_files_load_in_mlx_lm(tmp_path, sample_records, tokenizer_dir):
    """The merged split files are mlx-lm's format: its own loader reads and tokenizes them."""
    from mlx_lm.tuner.datasets import load_local_dataset
    from transformers import AutoTokenizer

    recs = sample_records(30) + sample_records(6, fmt="code")
    for r in recs[30:]:
        r["meta"]["path"] = "code/" + r["meta"]["path"]
    write_jsonl(tmp_path / "in.jsonl", recs)
    merge_files([tmp_path / "in.jsonl"], tmp_path / "phase", valid=0.2, test=0.1, seed=0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    train, valid, test = load_local_dataset(Path(tmp_path / "phase"), tok, SimpleNamespace(mask_prompt=True))
    assert len(train) + len(valid) + len(test) == 36 and len(valid) > 0 and len(test) > 0
    for ds in (train, valid, test):
        for i in range(len(ds)):
            tokens, offset = ds.process(ds[i])
            assert 0 < offset < len(tokens)


def test_load_checked_collects_everything(tmp_path, sample_records):
    write_jsonl(tmp_path / "a.jsonl", sample_records(2))
    (tmp_path / "b.jsonl").write_text("\n\n{bad\n")
    good, problems = load_checked([tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"])
    assert [g.line for g in good] == [1, 2]
    assert problems[0].startswith(f"{tmp_path / 'b.jsonl'}:3: record: not valid JSON")
    assert problems[1] == f"{tmp_path / 'c.jsonl'}: no such file"


def test_qwen_style_template_of_the_tiny_model(tmp_path, tiny_model):
    """The project's tiny model (Qwen2.5-style template) counts tokens for tool and direct records."""
    from mlx_tune.data.html_examples import generate_html_examples

    generate_html_examples(tmp_path / "h.jsonl", tmp_path / "html", 3, 2, 3)
    assert validate_files([tmp_path / "h.jsonl"], model=tiny_model, max_seq_length=100_000) == 8
    s = dataset_stats(tmp_path / "h.jsonl", model=tiny_model)
    assert 0 < s["tokens"]["p50"] <= s["tokens"]["max"]


def test_validate_rejects_escaping_meta_paths(tmp_path, sample_records):
    recs = sample_records(5)
    recs[0]["meta"]["path"] = "../outside.py"
    recs[1]["meta"]["path"] = "/etc/passwd"
    recs[2]["meta"]["repo"] = "../elsewhere"
    recs[3]["meta"]["defined_in"] = "demo/../../x.py"
    recs[4]["meta"]["defined_in"] = "demo/mod4.py"  # a safe one is fine
    write_jsonl(tmp_path / "m.jsonl", recs)
    r = CliRunner().invoke(main, ["data", "validate", str(tmp_path / "m.jsonl")])
    assert r.exit_code == 1 and "4 problems" in r.output, r.output
    f = tmp_path / "m.jsonl"
    assert f"{f}:1: meta.path: '../outside.py' must be relative" in r.output
    assert f"{f}:2: meta.path: '/etc/passwd' must be relative" in r.output
    assert f"{f}:3: meta.repo: '../elsewhere' must be a plain repository name" in r.output
    assert f"{f}:4: meta.defined_in: 'demo/../../x.py' must be relative" in r.output
    assert f"{f}:5:" not in r.output


def test_stats_show_quality(tmp_path, sample_records):
    recs = sample_records(30)
    for i, r in enumerate(recs):
        r["meta"]["template"] = f"{r['meta']['category']}.t.{i % 2}"
        r["meta"]["style"] = "call-only" if r["meta"]["category"] != "direct" else "direct"
    write_jsonl(tmp_path / "all.jsonl", recs)
    merge_files([tmp_path / "all.jsonl"], tmp_path / "p", valid=0.2, test=0.2, seed=0, unseen_templates=0.0)
    r = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "p"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    q = s["quality"]
    # the sample records: grep "Where is ThingN defined?" with `class ThingN\b`, read "Show me demo/modN.py.",
    # direct "What does ThingN do?" (N masked by the symbol) -> every record has a masked twin
    assert q["near_duplicate_share"] == 1.0 and q["literal_pattern_share"] == 1.0
    assert q["grep_calls"] == 10 and q["templates"] == 6 and q["multi_turn_share"] == 0.0
    assert q["name_in_question_share"] == 0.5  # grep questions name the class, read questions give the path
    assert q["style"] == {"call-only": 20, "direct": 10} and q["shape"] == {"unknown": 30}
    for split in s["splits"].values():
        n = split["records"]
        direct = split["category"].get("direct", 0)
        assert split["direct_share"] == round(direct / n, 4) and split["tool_share"] == round(
            1 - direct / n, 4
        )
    text = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "p")]).output
    assert "100% near-duplicates" in text and "100% of 10 patterns are a literal" in text
    assert "shape:    unknown 30" in text


def test_folded_sources():
    from mlx_tune.data.datacheck import folded_sources

    counts = {"domain:x": 3, "html": 2, **{f"stdlib:m{i}": i + 1 for i in range(5)}, "repo:a": 4, "repo:b": 1}
    assert folded_sources(counts) == {"domain:x": 3, "html": 2, "stdlib:* (5)": 15, "repo:a": 4, "repo:b": 1}
    assert folded_sources(counts, most=5) == counts
