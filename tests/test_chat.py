"""The chat task: `data combine` (shapes, bad input, dedup, leakage-safe split), its metrics and
baselines, and `bench score --task chat` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_line_error

from mlx_tune import UserError, fileio
from mlx_tune.cli import main
from mlx_tune.eval import bench, bench_report
from mlx_tune.tasks import chat
from mlx_tune.tasks.chat_combine import Similarity, combine, normalize_text, read_file

TOPICS = [
    "parsers",
    "caches",
    "queues",
    "sockets",
    "threads",
    "tokens",
    "graphs",
    "matrices",
    "strings",
    "files",
]


def write_lines(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def qa(i: int) -> tuple[str, str]:
    return (
        f"How do {TOPICS[i % 10]} number {i} work in library {i * 7}?",
        f"Answer {i}: it works by step {i}.",
    )


def messages_obj(i: int, **extra) -> dict:
    q, a = qa(i)
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def sharegpt_obj(i: int) -> dict:
    q, a = qa(i)
    return {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": q},
                              {"from": "gpt", "value": a}]}  # fmt: skip


def prompt_obj(i: int) -> dict:
    q, a = qa(i)
    return {"prompt": q, "completion": a}


@pytest.mark.parametrize("make", [messages_obj, sharegpt_obj, prompt_obj])
def test_each_shape_is_normalized_to_messages(tmp_path, make):
    path = write_lines(tmp_path / "in.jsonl", [make(i) for i in range(3)])
    items, shape = read_file(path, "real")
    assert shape == next(iter(make(0)))
    first = items[0].record
    q, a = qa(0)
    assert [m["role"] for m in first["messages"]][-2:] == ["user", "assistant"]
    assert first["messages"][-2]["content"] == q and first["messages"][-1]["content"] == a
    assert first["meta"]["origin"] == "real" and first["meta"]["task"] == "chat"
    assert first["meta"]["category"] == "direct" and first["meta"]["source"] == "file:in.jsonl"


def test_origin_from_the_record_and_flag_override(tmp_path):
    objs = [messages_obj(0, origin="synthetic"), messages_obj(1, meta={"origin": "real", "note": "kept"})]
    path = write_lines(tmp_path / "in.jsonl", objs)
    items, _ = read_file(path, None)
    assert [it.record["meta"]["origin"] for it in items] == ["synthetic", "real"]
    assert items[1].record["meta"]["note"] == "kept"
    items, _ = read_file(path, "real")
    assert {it.record["meta"]["origin"] for it in items} == {"real"}


@pytest.mark.parametrize(
    "lines, message",
    [
        (["{not json"], "in.jsonl:1: not valid JSON"),
        ([messages_obj(0), {"text": "hello"}], "in.jsonl:2: unknown shape"),
        ([messages_obj(0), prompt_obj(1)], "in.jsonl:2: mixed shapes"),
        ([{"messages": [{"role": "user", "content": "Hi?"}]}], "in.jsonl:1: messages: no assistant turn"),
        ([{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": " "}]}],
         "in.jsonl:1: conversations[1].value: expected non-empty text"),
        ([{"conversations": [{"from": "alien", "value": "Hi?"}]}], "in.jsonl:1: conversations[0].from"),
        ([{"prompt": "Hi?"}], "in.jsonl:1: completion: missing"),
        ([{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."},
                        {"role": "user", "content": "And?"}]}], "in.jsonl:1: messages[2]: the conversation must end"),
        ([messages_obj(0, origin="made-up")], "in.jsonl:1: origin: 'made-up' is not real or synthetic"),
        ([], "in.jsonl: empty file"),
    ],
)  # fmt: skip
def test_bad_input_is_a_file_line_error_and_nothing_is_written(tmp_path, lines, message):
    good = write_lines(tmp_path / "good.jsonl", [messages_obj(i) for i in range(20)])
    bad = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("old\n")
    args = ["data", "combine", "--real", str(good), "--real", str(bad), "-o", str(out)]
    line = one_line_error(CliRunner().invoke(main, args))
    assert message in line
    assert (
        sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
        and (out / "train.jsonl").read_text() == "old\n"
    )


def test_record_without_origin_needs_a_flag(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [messages_obj(0)])
    with pytest.raises(UserError, match=r"in.jsonl:1: origin: not given .*--real or --synthetic"):
        combine([(path, None)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_combine_drops_duplicates_real_first_and_never_splits_a_near_duplicate_group(tmp_path):
    real = write_lines(tmp_path / "real.jsonl", [messages_obj(i) for i in range(60)])
    synthetic = [prompt_obj(i) for i in range(0, 60, 3)]  # exact duplicates of real questions
    q, a = qa(100)
    synthetic.append({"prompt": q.upper() + "!!", "completion": a})  # exact after normalization
    synthetic.append({"prompt": q, "completion": "another answer"})
    synthetic += [prompt_obj(i) for i in range(200, 240)]
    syn = write_lines(tmp_path / "syn.jsonl", synthetic)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["data", "combine", "--real", str(real), "--synthetic", str(syn), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["dropped"]["exact_duplicates"] == 21  # 20 copies of real questions + one re-cased copy
    assert m["records"] == 60 + 1 + 40 and m["origin"] == {"real": 60, "synthetic": 41}
    assert "tier: small: infrastructure testing" in result.output
    assert "warning: 41% of records are synthetic (above 20%)" in result.output
    splits = {s: fileio.read_jsonl(out / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert all(splits.values()) and sum(len(v) for v in splits.values()) == m["records"]
    # the duplicated questions kept the real record
    kept = {normalize_text(r["messages"][0]["content"]): r for v in splits.values() for r in v}
    assert kept[normalize_text(qa(0)[0])]["meta"]["origin"] == "real"
    # every pair of questions similar at the group threshold lands in one split
    where = {normalize_text(r["messages"][0]["content"]): s for s, v in splits.items() for r in v}
    questions = sorted(where)
    sim = Similarity(questions)
    for i, j in sim.pairs(m["settings"]["group"]):
        assert where[questions[i]] == where[questions[j]]
    # same inputs and seed: byte-identical files; another seed: another split
    again = tmp_path / "again"
    combine([(real, "real"), (syn, "synthetic")], again)
    for s in ("train", "valid", "test"):
        assert (again / f"{s}.jsonl").read_bytes() == (out / f"{s}.jsonl").read_bytes()
    other = combine([(real, "real"), (syn, "synthetic")], tmp_path / "other", seed=1)
    assert other["files"]["test.jsonl"]["sha256"] != m["files"]["test.jsonl"]["sha256"]


def test_near_duplicates_are_dropped_and_paraphrases_grouped(tmp_path):
    base = [qa(i)[0] for i in range(40)]
    near = (
        "How do parsers number 0 work in library 0 ?? please"  # the question of record 0, reworded a little
    )
    s = Similarity([normalize_text(q) for q in [*base, near]])
    assert s(0, 40) >= 0.5 and s(1, 2) < 0.5
    objs = [{"prompt": q, "completion": "x"} for q in base] + [{"prompt": near, "completion": "y"}]
    m = combine([(write_lines(tmp_path / "in.jsonl", objs), "real")], tmp_path / "out", near=s(0, 40))
    assert m["dropped"] == {"exact_duplicates": 0, "near_duplicates": 1} and m["records"] == 40


def test_synthetic_share_warning_and_bad_options(tmp_path):
    syn = write_lines(tmp_path / "syn.jsonl", [prompt_obj(i) for i in range(30)])
    real = write_lines(tmp_path / "real.jsonl", [prompt_obj(i) for i in range(100, 105)])
    m = combine([(real, "real"), (syn, "synthetic")], tmp_path / "out")
    assert m["synthetic_share"] == round(30 / 35, 4) and "86% of records are synthetic" in m["warnings"][0]
    with pytest.raises(UserError, match="--valid"):
        combine([(real, "real")], tmp_path / "o2", valid=0.6, test=0.5)
    with pytest.raises(UserError, match="no input files"):
        combine([], tmp_path / "o3")


# ---------------------------------------------------------------- metrics and baselines


def record(question: str, answer: str, origin: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "meta": {"category": "direct", "origin": origin, "source": "file:x", "generator": "t"}}  # fmt: skip


def test_short_answer_rules():
    assert chat.choice_letter("B") == "B" and chat.choice_letter("(c) because") == "C"
    assert chat.choice_letter("The answer is d.") == "D" and chat.choice_letter("A function that") is None
    assert chat.short_correct("B) typer", "B") and not chat.short_correct("A", "B")
    assert chat.short_correct("Class. It is defined in rich.", "class")
    assert not chat.short_correct("It is a class.", "class")
    assert chat.is_short("3") and not chat.is_short("Return the major minor part of the version.")


def test_score_on_hand_made_answers_with_intervals_and_origins():
    queries = [
        record("Is X a class?", "class", "synthetic"),
        record("Which package? A) a B) b", "B", "synthetic"),
        record("What does f do?", "Return the parsed value of the text.", "real"),
        record("What does g do?", "Print a message to stdout.", "real"),
    ]
    texts = ["Class.", "(A) a", "return the parsed value of the text", "It prints a line."]
    s = chat.score(queries, texts)
    acc, ci = s["accuracy"], s["ci"]
    assert acc["exact_match"] == 0.5 and acc["short_answer"] == 0.5
    assert acc["exact_match/real"] == 0.5 and acc["exact_match/synthetic"] == 0.5
    assert acc["short_answer/real"] is None and ci["short_answer/real"] is None
    assert acc["rouge_l/real"] == pytest.approx((1.0 + s["rows"][3]["rouge_l"]) / 2)
    assert 0 < s["rows"][3]["rouge_l"] < 1 and s["rows"][2]["rouge_l"] == 1.0
    for key in ("exact_match", "short_answer", "rouge_l", "rouge_l/synthetic"):
        low, high = ci[key]
        assert low <= acc[key] <= high and low < high
    assert s["counts"] == {"n": 4, "short": 2, "real": 2, "synthetic": 2}


def test_baselines_constant_and_nearest_training_answer():
    train = [record("What does parse_value do?", "Parse a value.", "real"),
             record("What does print_line do?", "Print a line.", "real")]  # fmt: skip
    queries = [record("Explain print_line please", "Print a line.", "real")]
    b = chat.baselines(queries, train)
    assert b == {"constant": [chat.CONSTANT_ANSWER], "nearest-train": ["Print a line."]}
    assert chat.baselines(queries, [])["nearest-train"] == [chat.CONSTANT_ANSWER]


def test_bench_score_task_chat_end_to_end(tmp_path):
    objs = [{"prompt": f"What does func_{i} do in pkg?", "completion": f"It computes value {i} quickly."}
            for i in range(40)]  # fmt: skip
    objs += [{"prompt": f"Is Name{i} a class or a function?", "completion": "class"} for i in range(40)]
    data = tmp_path / "data"
    combine([(write_lines(tmp_path / "in.jsonl", objs), "real")], data)
    test = fileio.read_jsonl(data / "test.jsonl")
    answers = [{"text": r["messages"][-1]["content"] if i % 2 else "no idea"} for i, r in enumerate(test)]
    write_lines(tmp_path / "answers.jsonl", answers)
    out = tmp_path / "bench"
    args = ["score", "--task", "chat", "--queries", str(data / "test.jsonl"), "--predictions",
            str(tmp_path / "answers.jsonl"), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(bench.command, args)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["task"] == "chat" and res["settings"]["train"] == str(data / "train.jsonl")
    names = [(m["name"], m["kind"]) for m in res["models"]]
    assert names == [("answers", "model"), ("constant", "baseline"), ("nearest-train", "baseline")]
    model = res["models"][0]
    assert model["accuracy"]["exact_match"] == pytest.approx(sum(i % 2 for i in range(len(test))) / len(test))
    assert model["accuracy"]["exact_match/synthetic"] is None and model["ci"]["exact_match"]
    assert "rouge-L real" in result.output and "short acc" in (out / "results.md").read_text()
    assert len(fileio.read_jsonl(out / "predictions" / "answers.jsonl")) == len(test)
    assert (out / "chart.png").is_file()
    assert bench_report.redraw(out)["models"][0]["name"] == "answers"  # `bench report` reads it back
    bad = CliRunner().invoke(bench.command, [*args[:2], "nope", *args[3:]])
    assert "--task: unknown task 'nope' (choose from chat, dot, tools)" in one_line_error(bad)


def test_multi_turn_conversations_keep_every_turn_and_key_on_all_questions(tmp_path):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a queue?"},
             {"role": "assistant", "content": "A FIFO list."}, {"role": "user", "content": "And a stack?"},
             {"role": "assistant", "content": "A LIFO list."}]  # fmt: skip
    path = write_lines(tmp_path / "in.jsonl", [{"messages": turns, "origin": "real"}])
    (item,), _ = read_file(path, None)
    assert item.record["messages"] == turns and item.question == "what is a queue and a stack"
    assert (
        chat.reference_of(item.record) == "A FIFO list."
        and chat.question_of(item.record) == "What is a queue?"
    )
