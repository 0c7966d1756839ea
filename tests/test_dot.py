"""The dot task: ast generators on hand-written trees, canonical DOT, grounding, determinism,
parser-based metrics, intervals, memorisation, baselines, the leakage-safe split and the recipe."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mlx_tune import UserError, fileio, records
from mlx_tune.eval.intervals import mean_interval, wilson
from mlx_tune.tasks import dot, dot_data, dot_synth
from mlx_tune.tasks.dot_extract import extract_all, module_name
from mlx_tune.tasks.dot_graph import Graph, compare, f1, parse_dot, to_dot
from mlx_tune.training import train_config

TREE = {
    "pkg/__init__.py": "from .core import run\nfrom .shapes import Shape\n",
    "pkg/core.py": textwrap.dedent(
        """\
        import os
        from . import util
        from .sub import thing
        from pkg.shapes import Circle


        def helper(x):
            return x + 1


        def run(x):
            print("unrelated line")
            y = helper(x)
            return Runner().go(y)


        class Runner:
            def go(self, y):
                self.step(y)
                return Runner.finish(y)

            def step(self, y):
                return helper(y)

            @staticmethod
            def finish(y):
                return y
        """
    ),
    "pkg/util.py": "import json\n",
    "pkg/sub/__init__.py": "from ..util import dumps\nthing = 1\n",
    "pkg/shapes.py": textwrap.dedent(
        """\
        from typing import Generic, TypeVar

        T = TypeVar("T")


        class Shape:
            '''A shape.'''


        class Circle(Shape):
            radius = 1


        class Box(Shape, Generic[T]):
            pass


        class Square(Box, metaclass=type):
            pass
        """
    ),
    "pkg/machine.py": textwrap.dedent(
        """\
        from enum import Enum


        class State(Enum):
            IDLE = 1
            RUNNING = 2
            DONE = 3
            BROKEN = 4


        NEXT = {
            State.IDLE: [State.RUNNING],
            State.RUNNING: (State.DONE, State.IDLE),
        }
        STRINGS = {"a": "b", "b": ("c", "a"), "c": []}
        EVENTS = {("a", "go"): "b", ("b", "back"): "a", ("b", "back"): "c"}
        NAMESPACE = {"range": range, "dict": dict, "lipsum": lipsum}
        """
    ),
    "pkg/broken.py": "def oops(:\n",
}


def facts_by(kind: str, files: dict = TREE) -> dict:
    return {f.graph.name: f for f in extract_all(files) if f.kind == kind}


# ---------------------------------------------------------------- generators


def test_module_names():
    assert module_name("pkg/core.py") == "pkg.core"
    assert module_name("pkg/sub/__init__.py") == "pkg.sub"
    assert module_name("src/pkg/a.py") == "pkg.a"


def test_class_hierarchy():
    fact = facts_by("classes")["pkg.shapes"]
    assert fact.graph.edges == {("Circle", "Shape"), ("Box", "Shape"), ("Box", "Generic"), ("Square", "Box")}
    assert fact.graph.nodes == {"Shape", "Circle", "Box", "Square", "Generic"}
    assert fact.files == ["pkg/shapes.py"]
    assert "class Square(Box, metaclass=type):" in fact.snippet
    assert "radius" not in fact.snippet  # headers only, bodies elided


def test_import_graph_resolves_relative_and_absolute_imports():
    graph = facts_by("imports")["pkg"].graph
    assert graph.edges == {
        ("pkg", "pkg.core"),
        ("pkg", "pkg.shapes"),
        ("pkg.core", "pkg.util"),
        ("pkg.core", "pkg.sub"),
        ("pkg.core", "pkg.shapes"),
        ("pkg.sub", "pkg.util"),  # a subpackage is a module of its parent package
    }
    assert "os" not in graph.nodes and "json" not in graph.nodes  # outside the source tree
    assert {"pkg.machine", "pkg.util"} <= graph.nodes  # members without imports are nodes too
    assert "pkg.sub" not in facts_by("imports")  # one edge (pkg.sub -> pkg.util) is too small a graph


def test_call_graph_follows_self_and_class_calls():
    calls = facts_by("calls")
    fact = calls["pkg.core.run"]
    assert fact.graph.edges == {
        ("run", "helper"),
        ("run", "Runner.go"),
        ("Runner.go", "Runner.step"),
        ("Runner.go", "Runner.finish"),
        ("Runner.step", "helper"),
    }
    assert list(calls) == ["pkg.core.run"]  # only roots: helper, go, step are called by others
    assert "self.step(y)" in fact.snippet and "class Runner:" in fact.snippet
    assert "unrelated line" not in fact.snippet


def test_state_machines_from_tables():
    states = facts_by("states")
    enum = states["pkg.machine.NEXT"].graph
    assert enum.edges == {("IDLE", "RUNNING"), ("RUNNING", "DONE"), ("RUNNING", "IDLE")}
    assert "BROKEN" in enum.nodes  # an enum member no transition reaches is still a state
    assert states["pkg.machine.STRINGS"].graph.edges == {("a", "b"), ("b", "c"), ("b", "a")}
    events = states["pkg.machine.EVENTS"].graph
    assert events.edges == {("a", "b"), ("b", "c")}  # the repeated key keeps its last value
    assert events.labels == {("a", "b"): "go", ("b", "c"): "back"}
    assert "pkg.machine.NAMESPACE" not in states  # a mapping of names is not a transition table
    assert "class State(Enum):" in states["pkg.machine.NEXT"].snippet


def test_size_limits():
    small = extract_all(TREE, max_nodes=4, max_edges=3)
    assert small and all(len(f.graph.nodes) <= 4 and len(f.graph.edges) <= 3 for f in small)
    assert any(len(f.graph.nodes) > 4 for f in extract_all(TREE))  # the limits left something out


def test_unparsable_files_are_skipped():
    assert not any("broken" in p for f in extract_all(TREE) for p in f.files)


def test_every_fact_is_grounded_in_its_snippet_and_file():
    for fact in extract_all(TREE):
        assert fact.files[0] in TREE
        n_lines = len(TREE[fact.files[0]].splitlines())
        assert 1 <= fact.lines[0] <= fact.lines[1] <= n_lines
        if fact.kind in ("classes", "calls", "states"):
            for node in fact.graph.nodes:
                assert node.rpartition(".")[2] in fact.snippet, (fact.graph.name, node)


def test_synthetic_programs_give_one_fact_of_their_kind():
    programs = dot_synth.programs(12, seed=3)
    assert programs == dot_synth.programs(12, seed=3)
    assert programs != dot_synth.programs(12, seed=4)
    for kind, files in programs:
        assert [f.kind for f in extract_all(files)].count(kind) >= 1


# ---------------------------------------------------------------- canonical DOT and parsing


def test_canonical_dot_is_sorted_quoted_and_round_trips():
    g = Graph('m "x"')
    g.add_edge("b", "a")
    g.add_edge("a", "c", label="go")
    g.nodes.add("z")
    text = to_dot(g)
    assert text.splitlines() == [
        'digraph "m \\"x\\"" {',
        '  "z";',  # only the node without an edge is declared
        '  "a" -> "c" [label="go"];',
        '  "b" -> "a";',
        "}",
    ]
    assert to_dot(g, "G").startswith('digraph "G" {')
    back, problem = parse_dot(text)
    assert problem is None and back.name == 'm "x"'
    assert (back.nodes, back.edges) == (g.nodes, g.edges)


@pytest.mark.parametrize(
    "text, nodes, edges",
    [
        ('```dot\ndigraph G { "a" -> b; }\n```\nDone.', {"a", "b"}, {("a", "b")}),
        ("Here it is:\ndigraph { a -> {b c}; node [shape=box]; }", {"a", "b", "c"}, {("a", "b"), ("a", "c")}),
        ("digraph { subgraph s { x:p1 -> y } }", {"x", "y"}, {("x", "y")}),
        ("graph { a -- b }", {"a", "b"}, {("a", "b")}),
    ],
)
def test_parse_reads_real_dot(text, nodes, edges):
    graph, problem = parse_dot(text)
    assert problem is None
    assert (graph.nodes, graph.edges) == (nodes, edges)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no graph here",
        "digraph { a -> }",
        "digraph G { a -> b } trailing words",
        "digraph A {} digraph B {}",
    ],
)
def test_parse_rejects_invalid_dot(text):
    graph, problem = parse_dot(text)
    assert graph is None and problem


def test_f1_and_compare_on_partial_graphs():
    assert f1(set(), set()) == 1.0 and f1({"a"}, set()) == 0.0
    ref, pred = Graph("r"), Graph("p")
    ref.add_edge("a", "b")
    ref.add_edge("b", "c")
    pred.add_edge("a", "b")
    pred.add_edge("a", "c")
    assert compare(pred, ref) == {"node_f1": 1.0, "edge_f1": 0.5, "exact": False}
    undirected = Graph("u", directed=False)
    undirected.add_edge("b", "a")
    undirected.add_edge("c", "b")
    assert compare(undirected, ref)["edge_f1"] == 1.0


# ---------------------------------------------------------------- score, intervals, memorisation


def query(dot_text: str, direction: str = "code", origin: str = "real") -> dict:
    meta = {
        "kind": "calls",
        "direction": direction,
        "origin": origin,
        "repo": "r",
        "path": "a.py",
        "files": ["a.py"],
    }
    return dot_data.record("Draw it.", dot_text, meta)


REF = 'digraph "g" {\n  "a";\n  "b";\n  "c";\n  "a" -> "b";\n  "b" -> "c";\n}\n'


def test_score_counts_parses_f1_and_intervals():
    queries = [query(REF), query(REF), query(REF, "description"), query(REF, "description")]
    texts = [REF, "digraph { a -> b; a -> c }", "digraph { a -> }", "I cannot draw that."]
    scored = dot.score(queries, texts)
    acc, ci = scored["accuracy"], scored["ci"]
    assert acc["parse"] == 0.5 and ci["parse"] == wilson(2, 4)
    assert acc["exact"] == 0.25
    assert acc["edge_f1"] == pytest.approx((1.0 + 0.5) / 4)
    assert ci["edge_f1"] == mean_interval([1.0, 0.5, 0.0, 0.0])
    assert ci["node_f1"][0] <= acc["node_f1"] <= ci["node_f1"][1]
    assert acc["memorised"] is None and ci["memorised"] is None  # no training targets given
    assert [r["parsed"] for r in scored["rows"]] == [True, True, False, False]
    assert "problem" in scored["rows"][2]
    assert acc["parse/code"] == 1.0 and acc["parse/description"] == 0.0
    assert scored["subsets"]["direction:code"]["n"] == 2
    assert {k for _, k in dot.COLUMNS} <= set(acc)


def test_memorisation_share_needs_training_targets():
    other = 'digraph "h" {\n  "x";\n  "y";\n  "x" -> "y";\n}\n'
    train = [query(other)]
    texts = ["```dot\n" + other.replace("\n  ", " ") + "```", REF, "digraph { x -> y }"]
    scored = dot.score([query(REF)] * 3, texts, train=train)
    assert [r["memorised"] for r in scored["rows"]] == [True, False, False]  # whitespace aside
    assert scored["accuracy"]["memorised"] == pytest.approx(1 / 3)
    assert scored["ci"]["memorised"] == wilson(1, 3)
    assert scored["counts"]["reference_in_train"] == 0
    assert dot.score([query(other)], [other], train=train)["counts"]["reference_in_train"] == 1
    assert dot.score([query(REF)], [REF], train=[other])["accuracy"]["memorised"] == 0.0  # strings work too


def test_score_rejects_a_reference_that_is_not_dot():
    with pytest.raises(UserError, match="query 0: the reference answer is not a DOT graph"):
        dot.score([query("not a graph")], [REF])


def test_baselines():
    train = [query(REF), query(REF), query('digraph "h" {\n  "x";\n}\n')]
    q = dot_data.record("`alpha` calls `beta`. Write a DOT digraph.", REF, query(REF)["meta"])
    out = dot.baselines([q], train)
    assert set(out) == {"empty", "most_frequent", "echo_names", "nearest"}
    assert out["most_frequent"] == [REF]
    assert parse_dot(out["empty"][0])[0].nodes == set()
    echo = parse_dot(out["echo_names"][0])[0]
    assert echo.nodes == {"alpha", "beta"} and echo.name == "G"
    assert out["nearest"][0] in dot.targets(train)
    for texts in out.values():
        assert dot.score([q], texts)["accuracy"]["parse"] == 1.0


# ---------------------------------------------------------------- records, split, determinism


def sources() -> dict:
    return {"pkgrepo": {p: s for p, s in TREE.items()}}


def test_records_are_valid_chat_records_with_grounded_meta():
    recs = dot_data.examples(sources(), seed=0, synthetic=8, per_kind=5)
    assert {r["meta"]["direction"] for r in recs} == {"code", "description"}
    assert {r["meta"]["origin"] for r in recs} == {"real", "synthetic"}
    for r in recs:
        assert records.validate_record(r) == [], r["meta"]
        assert records.record_category(r) == r["meta"]["category"]
        graph, problem = parse_dot(records.answer_of(r)["content"])
        assert problem is None and graph.name == dot_data.GRAPH_NAME and r["meta"]["graph"]
        if r["meta"]["origin"] == "real":
            assert r["meta"]["path"] in TREE and r["meta"]["template"].startswith(f"dot.{r['meta']['kind']}.")
        if r["meta"]["direction"] == "description":
            for a, b in graph.edges:
                assert f"`{a}`" in r["messages"][1]["content"] and f"`{b}`" in r["messages"][1]["content"]


def test_split_keeps_files_together_and_build_is_deterministic(tmp_path):
    recs = dot_data.examples(sources(), seed=0, synthetic=30, per_kind=5)
    splits = dot_data.split(recs, seed=1, valid=0.2, test=0.3)
    assert sum(len(v) for v in splits.values()) == len(recs)
    where: dict = {}
    for name, part in splits.items():
        assert part, name
        for r in part:
            for f in r["meta"]["files"]:
                assert where.setdefault((r["meta"]["repo"], f), name) == name, f  # no file in two splits
    a = dot_data.build(sources(), tmp_path / "a", seed=5, synthetic=10, per_kind=3)
    b = dot_data.build(sources(), tmp_path / "b", seed=5, synthetic=10, per_kind=3)
    assert a == b and a["records"] == a["train"] + a["valid"] + a["test"]
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    dot_data.build(sources(), tmp_path / "c", seed=6, synthetic=10, per_kind=3)
    assert any(
        (tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes()
        for n in ("train.jsonl", "test.jsonl")
    )


def test_folder_sources_and_errors(tmp_path):
    for rel, text in TREE.items():
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text(text)
    assert dot_data.folder_files(tmp_path / "repo") == TREE
    with pytest.raises(UserError, match="no such folder"):
        dot_data.folder_files(tmp_path / "missing")
    with pytest.raises(UserError, match="no graph found"):
        dot_data.examples({"empty": {"a.py": "x = 1\n"}}, synthetic=0)
    with pytest.raises(UserError, match="no installed distribution"):
        dot_data.installed_files("no-such-distribution-xyz")


def test_data_command_writes_a_split_phase_folder(tmp_path):
    repo = tmp_path / "myrepo"
    for rel, text in TREE.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    counts = dot_data.data_command([str(repo), "jsonlines"], tmp_path / "out", synthetic=4, per_kind=2)
    splits = {n: fileio.read_jsonl(tmp_path / "out" / f"{n}.jsonl") for n in ("train", "valid", "test")}
    recs = [r for rs in splits.values() for r in rs]
    assert len(recs) == counts["records"] == sum(counts[n] for n in splits)
    assert {r["meta"]["repo"] for r in recs} == {"myrepo", "jsonlines", "synthetic"}
    files = {n: {(r["meta"]["repo"], f) for r in rs for f in r["meta"]["files"]} for n, rs in splits.items()}
    assert not files["train"] & (files["valid"] | files["test"])  # no source file straddles splits
    manifest = yaml.safe_load((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"jsonlines"} and set(manifest["files"]) == {
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
    }
    # a failing run leaves the folder as it was
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(UserError):
        dot_data.data_command([str(tmp_path / "missing")], tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    with pytest.raises(UserError, match="not a plain repository name"):
        dot_data.sources_from([f"../x={repo}"])
    (tmp_path / "nopy").mkdir()
    with pytest.raises(UserError, match="no Python files"):
        dot_data.sources_from([str(tmp_path / "nopy")])


def test_demo_data_from_an_installed_package(tmp_path):
    counts = dot_data.build_demo_data(tmp_path, seed=0, dists=("jsonlines", "not-installed-xyz"), synthetic=8)
    assert counts["origin"]["real"] > 0 and counts["origin"]["synthetic"] > 0
    assert len(fileio.read_jsonl(tmp_path / "train.jsonl")) == counts["train"]
    manifest = yaml.safe_load((tmp_path / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"jsonlines"}  # a package not installed is skipped


# ---------------------------------------------------------------- the phase recipe


RECIPE = Path(__file__).resolve().parent.parent / "mlx_tune" / "configs" / "phases" / "dot.yaml"


def test_recipe_has_the_issue_settings(tmp_path):
    raw = yaml.safe_load(RECIPE.read_text())
    assert raw["task"] == "dot"
    train = dict(raw["train"])
    preset = train.pop("preset")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(train))
    s = train_config.resolve_settings(preset=preset, config=config, overrides={"data": "data/x"}, notes=[])
    assert (s.rank, s.lora_scale, s.target_modules) == (16, 2.0, ["q_proj", "v_proj"])
    assert (s.learning_rate, s.batch_size, s.grad_accumulation_steps, s.warmup) == (2e-4, 4, 4, 0.1)
    assert 3 <= s.epochs <= 5


def test_recipe_loads_as_a_phase():
    from mlx_tune import phases
    from mlx_tune.training import train_config

    phase = phases.load_phase(RECIPE)
    assert phase.task == "dot" and phase.number == 20 and phase.inputs == []
    s = train_config.resolve_settings(phase=str(RECIPE), notes=[])  # a recipe named by its path
    assert (s.data, s.adapter_path) == ("data/phase20", "adapters/phase20")
