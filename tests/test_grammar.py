"""Every grammar rule and node of the language: text and Python build the same graph."""

from __future__ import annotations

import pytest
from lark import Tree

import rrrdsl
from rrrdsl.lang import algebra, ir
from rrrdsl.lang.ir import Leaf, Mixture, Power, Product, Region, View, box, classifier, constant, crop, gmm, model, oracle
from rrrdsl.lang.grammar import parser as _parser
from rrrdsl.lang.parse import parse, parse_expr
from rrrdsl.lang.program import Assign, Plot, Sample, Show

a, b, c, d = (oracle(name) for name in ("a", "b", "c", "d"))

# (text, the same graph built in Python)
CONSTRUCTS = [
    ('model("dog") * model("hat") ** 2 / model("cartoon")', model("dog") * model("hat") ** 2 / model("cartoon")),
    ('model("ring")', model("ring")),
    ('model("digits", label=3)', model("digits", label=3)),
    ('model("digits", label=3, style="thin", scale=0.5, flag=true, off=false)',
     model("digits", label=3, style="thin", scale=0.5, flag=True, off=False)),
    ('model("m", vec=[1, -2.5, 1e-3], mat=[[1, 2], [3, 4]])', model("m", vec=[1, -2.5, 1e-3], mat=[[1, 2], [3, 4]])),
    ('model(name="ring")', model("ring")),
    ('oracle("ring")', oracle("ring")),
    ('classifier("digits", label=3)', classifier("digits", label=3)),
    ("gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1, weights=[0.3, 0.7])",
     gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1, weights=[0.3, 0.7])),
    ("gmm(means=[[0, 0], [1, 1]], std=[0.1, 0.2])", gmm(means=[[0, 0], [1, 1]], std=[0.1, 0.2])),
    ("gmm(means=[[0, 0]], std=[[0.1, 0.2]])", gmm(means=[[0, 0]], std=[[0.1, 0.2]])),
    ("gmm(means=[[0, 0]])", gmm(means=[[0, 0]])),
    ("box(low=[-0.2, -1], high=[0.2, 1])", box(low=[-0.2, -1], high=[0.2, 1])),
    ('crop(model("d"), rows=0:8, cols=4:12)', crop(model("d"), rows=(0, 8), cols=(4, 12))),
    ('crop(model("v"), dims=0:1)', crop(model("v"), dims=(0, 1))),
    ('crop(oracle("a") * oracle("b"), cols=1:2)', crop(a * b, cols=(1, 2))),
    ('oracle("a") * oracle("b")', a * b),
    ('oracle("a") / oracle("b")', a / b),
    ('oracle("a") * oracle("b") / oracle("c") * oracle("d")', a * b / c * d),
    ('oracle("a") ** 2', a**2),
    ('oracle("a") ** -0.5', a**-0.5),
    ('oracle("a") ** (1/3)', a ** (1 / 3)),
    ('oracle("a") ** 2 ** 3', a ** (2**3)),
    ('(oracle("a") ** 2) ** 3', (a**2) ** 3),
    ('oracle("a") ** 0', a**0),
    ('oracle("a") * oracle("a")', a * a),
    ('oracle("a") + oracle("b")', a + b),
    ('oracle("a") + oracle("b") + oracle("c")', a + b + c),
    ('oracle("a") + (oracle("b") + oracle("c"))', a + (b + c)),
    ('0.3 * oracle("a") + 0.7 * oracle("b")', 0.3 * a + 0.7 * b),
    ('2 * (oracle("a") + oracle("b")) + oracle("c")', 2 * (a + b) + c),
    ('oracle("a") * 0.3 + oracle("b") / 2', a * 0.3 + b / 2),
    ('(oracle("a") + oracle("b")) * oracle("c") ** 2', (a + b) * c**2),
    ("2 * 3", constant(6)),
    ("2.5E+2", constant(250)),
    ("1 / 4", constant(0.25)),
    ("2 - 1.5", constant(0.5)),
    ("-2 ** 2 + 5", constant(1)),
    ("--3", constant(3)),
    ('oracle("a") ** -(1/2)', a**-0.5),
    ('oracle("a") ** --2', a**2),
    ('model("\\u00e9t\\u00e9 \\"quoted\\"\\n")', model('été "quoted"\n')),
]


@pytest.mark.parametrize("text, built", CONSTRUCTS)
def test_text_builds_the_python_graph(text: str, built: ir.Expr) -> None:
    parsed = parse_expr(text)
    assert parsed == built
    assert str(parsed) == str(built)


@pytest.mark.parametrize("built", [g for _, g in CONSTRUCTS])
def test_printed_text_parses_back(built: ir.Expr) -> None:
    assert parse_expr(str(built)) == built


def test_the_headline_example_and_a_broken_variant() -> None:
    g = model("dog") * model("hat") ** 2 / model("cartoon")
    assert rrrdsl.parse_expr('model("dog") * model("hat") ** 2 / model("cartoon")') == g
    # the comparison can fail: a different exponent or a swapped quotient is another graph
    assert rrrdsl.parse_expr('model("dog") * model("hat") ** 3 / model("cartoon")') != g
    assert rrrdsl.parse_expr('model("cartoon") * model("hat") ** 2 / model("dog")') != g


def test_precedence_is_pythons() -> None:
    program = parse("x = -2 ** 2\ny = 2 * 3 + 4\nz = 2 ** -1\nu = 12 / 2 / 3\nv = 2 ** 3 ** 2\n")
    assert dict(program.bindings) == {"x": -4.0, "y": 10.0, "z": 0.5, "u": 2.0, "v": 512.0}


def test_number_bindings_and_folding() -> None:
    program = parse('w = 0.5\nv = -w * 2\na = oracle("a")\np = a ** w * a ** v\nq = a ** (1 / 3) / a ** w')
    bindings = program.bindings
    assert bindings["w"] == 0.5 and bindings["v"] == -1.0
    assert bindings["p"] == a ** -0.5
    assert bindings["q"] == a ** (1 / 3) / a**0.5


def test_chains_lower_with_one_constructor_call(monkeypatch: pytest.MonkeyPatch) -> None:
    leaves = [model(f"m{i}") for i in range(2000)]
    text = " * ".join(f'model("m{i}")' for i in range(1000)) + "".join(f' / model("m{i}")' for i in range(1000, 2000))
    expected = ir.product(*leaves[:1000], *(ir.power(leaf, -1.0) for leaf in leaves[1000:]))
    calls = {"product": 0, "mixture": 0}
    for name in calls:
        def counted(*args, _real=getattr(algebra, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(algebra, name, counted)  # the lowering calls the constructors there
    parsed = parse_expr(text)
    assert calls["product"] == 1
    assert isinstance(parsed, Product) and len(parsed.terms) == 2000
    assert parsed == expected
    mixed = parse_expr(" + ".join(f'model("m{i}")' for i in range(500)))
    assert calls["mixture"] == 1
    assert isinstance(mixed.base, Mixture) and mixed.base.weights == (1 / 500,) * 500


def test_node_types() -> None:
    assert isinstance(parse_expr('oracle("a")'), Leaf)
    assert isinstance(parse_expr('oracle("a") * oracle("b")'), Product)
    assert isinstance(parse_expr('oracle("a") ** 2'), Power)
    assert isinstance(parse_expr('oracle("a") + oracle("b")').base, Mixture)
    view = parse_expr('crop(oracle("a"), rows=0:2)')
    assert isinstance(view, View) and view.region == Region(rows=(0, 2))
    weighted = parse_expr('0.3 * oracle("a")')
    assert weighted == a and weighted.constant == pytest.approx(0.3)


PROGRAM = '''# a comment line
w = 0.5   # trailing comment

a = oracle("ring")
g = gmm(
    means=[[0.5, 0],    # a point per line
           [-0.5, 0]],
    std=0.1,
)
p = a ** w * (g
              + a)
sample p
sample p using mala n=10
sample p using hmc() seed=3
sample p using mala(step_size=0.1, steps=10, mh="exact", grid=[1, 2], adapt=true) n=1000 seed=0 -> "out.npz"
sample a * g seed=0 n=5
plot p
plot a * g -> "p.png"
show p
show w
'''


def test_program_statements() -> None:
    program = parse(PROGRAM, "demo.rrr")
    assert program.filename == "demo.rrr" and program.source == PROGRAM
    s = program.statements
    assert [type(x).__name__ for x in s] == ["Assign"] * 4 + ["Sample"] * 5 + ["Plot"] * 2 + ["Show"] * 2
    p = program.bindings["p"]
    g = gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1)
    assert s[1] == Assign("a", oracle("ring"), 4, 1)
    assert p == oracle("ring") ** 0.5 * (g + oracle("ring"))
    assert s[2].line == 5 and s[3].line == 10
    assert s[4] == Sample(p, "p", None, (), None, None, None, 12, 1)
    assert s[5] == Sample(p, "p", "mala", (), 10, None, None, 13, 1)
    assert s[6] == Sample(p, "p", "hmc", (), None, 3, None, 14, 1)
    options = (("step_size", 0.1), ("steps", 10), ("mh", "exact"), ("grid", (1, 2)), ("adapt", True))
    assert s[7] == Sample(p, "p", "mala", options, 1000, 0, "out.npz", 15, 1)
    assert s[8] == Sample(oracle("ring") * g, None, None, (), 5, 0, None, 16, 1)
    assert s[9] == Plot(p, "p", None, 17, 1) and s[10] == Plot(oracle("ring") * g, None, "p.png", 18, 1)
    assert s[11] == Show(p, "p", 19, 1) and s[12] == Show(0.5, "w", 20, 1)
    assert set(program.bindings) == {"w", "a", "g", "p"}


def test_initial_bindings_and_empty_programs() -> None:
    program = parse("q = p * p\n", bindings={"p": oracle("a")})
    assert program.bindings["q"] == oracle("a") ** 2
    assert parse("").statements == () and parse("\n  # only a comment\n\n").statements == ()
    assert parse('p = oracle("a")').statements[0].line == 1  # no trailing newline
    assert parse('p = oracle("a")\r\nshow p\r\n').statements[1] == Show(oracle("a"), "p", 2, 1)


def test_every_grammar_rule_is_exercised() -> None:
    """The texts above reach every rule and alias of grammars/rrr.lark."""
    parser = _parser()
    names = {str(rule.alias or rule.origin.name) for rule in parser.rules if not str(rule.origin.name).startswith("_")}
    names -= {"statement", "expression", "expr", "unary", "power", "atom", "arg", "value", "signed"}  # inlined (?rule)
    seen: set[str] = set()
    for statement in _statement_texts(PROGRAM) + [f"x = {t}" for t, _ in CONSTRUCTS] + ['load "sd15" as "sd" levels=50']:
        tree = parser.parse(statement, start="statement")
        seen |= {str(t.data) for t in tree.iter_subtrees()}
    assert names <= seen, names - seen


def _statement_texts(program: str) -> list[str]:
    from rrrdsl.lang.parse import blank, statement_end

    out, position = [], 0
    while True:
        position = blank().match(program, position).end()
        if position >= len(program):
            return out
        end = statement_end(program, position)
        out.append(program[position:end])
        position = end + 1


def test_grammar_is_a_package_resource() -> None:
    from rrrdsl.lang.grammar import grammar_text as _grammar_text

    text = _grammar_text()
    assert "?statement" in text and "propagate" not in text
    assert isinstance(_parser().parse('show oracle("a")', start="statement"), Tree)
