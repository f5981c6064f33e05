"""nanoRFT's MATH grader, rule by rule: each equivalence it knows is a small named rule in reward.py, pinned
here by a case it must accept and a case it must reject (the corpus test checks them all at scale)."""
import pytest

from machinery.math_equal import math_equal
from reward import score

# nanoRFT's MATH equivalences, one named rule each: a case it must accept and one it must reject
MATH_RULES = [  # (prediction, ground truth, expected)
    pytest.param(r"(p,q)=(3,2)", "(3,2)", 1.0, id="label: tuple of names"),
    pytest.param(r"(p,q)=(3,2)", "(2,3)", 0.0, id="label: tuple stays ordered"),
    pytest.param("f(x)=1", "1", 1.0, id="label: function"),
    pytest.param("f(3) = 12", "12", 1.0, id="label: function at a number"),
    pytest.param(r"x \in [-2,7]", "[-2,7]", 1.0, id="label: x in"),
    pytest.param(r"x \in (-2,7)", "[-2,7]", 0.0, id="label: x in, other interval"),
    pytest.param("A:B=1", "1", 1.0, id="label: ratio"),
    pytest.param("a=4,-8,-10", "4,-8,-10", 1.0, id="label: before a list"),
    pytest.param("x=2, x=3", "2,3", 1.0, id="label: one per item"),
    pytest.param("x=1, y=2", "1,2", 0.0, id="label: different names stay"),
    pytest.param("4x-5y=-50", "-50", 0.0, id="label: an equation is no label"),
    pytest.param(r"x \geq 5", r"x \ge 5", 1.0, id="relation: geq"),
    pytest.param("x >= 5", r"x \ge 5", 1.0, id="relation: >="),
    pytest.param("x != 3", r"x \neq 3", 1.0, id="relation: !="),
    pytest.param(r"x \lt 5", "x < 5", 1.0, id="relation: lt"),
    pytest.param(r"x \leq 5", r"x \le 5", 1.0, id="relation: leq"),
    pytest.param(r"5 \geq x", r"x \le 5", 1.0, id="relation: either way round"),
    pytest.param(r"5 \le x", r"x \le 5", 0.0, id="relation: not flipped alone"),
    pytest.param("x > 5", r"x \ge 5", 0.0, id="relation: strict is not"),
    pytest.param(r"\begin{bmatrix}1\\2\end{bmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", 1.0,
                 id="matrix: bmatrix"),
    pytest.param(r"\left[\begin{array}{cc}1&2\\3&4\end{array}\right]", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
                 1.0, id="matrix: array"),
    pytest.param(r"\begin{pmatrix}0.5\\2\end{pmatrix}", r"\begin{pmatrix}1/2\\2\end{pmatrix}", 1.0, id="matrix: cells"),
    pytest.param(r"\begin{pmatrix}1&2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", 0.0, id="matrix: shape"),
    pytest.param("28 percent", "28", 1.0, id="percent: word"),
    pytest.param("28 pct", r"28\%", 1.0, id="percent: pct"),
    pytest.param("28 percent", "0.28", 0.0, id="percent: not a fraction"),
    pytest.param(r"\sqrt{3}/3", r"\frac{\sqrt3}{3}", 1.0, id="slash: root"),
    pytest.param(r"-\pi/6", r"-\frac{\pi}{6}", 1.0, id="slash: pi"),
    pytest.param(r"\frac{-\pi}{6}", r"-\frac{\pi}{6}", 1.0, id="slash: sign inside"),
    pytest.param(r"2/\pi", r"\frac{\pi}{2}", 0.0, id="slash: upside down"),
    pytest.param("-2, 1", "1,-2", 1.0, id="list: any order"),
    pytest.param(r"\{2,1\}", "1,2", 1.0, id="list: a set"),
    pytest.param("1,1,2", "1,2,2", 0.0, id="list: multiplicity counts"),
    pytest.param("(2,1)", "(1,2)", 0.0, id="list: a tuple stays ordered"),
    pytest.param("(0,1]", "[0,1)", 0.0, id="list: an interval stays ordered"),
    pytest.param(r"6 \text{ and } 8", "6,8", 1.0, id="and: text"),
    pytest.param("2, 3, and 4", "4,3,2", 1.0, id="and: Oxford comma"),
    pytest.param(r"x=1 \text{ or } x=2", "1,2", 1.0, id="and: or, with labels"),
    pytest.param("1{,}000", "1000", 1.0, id="thousands: {,}"),
    pytest.param("1{,}001", "1000", 0.0, id="thousands: {,} value"),
    pytest.param(r"\pm 2", "2,-2", 1.0, id="pm: alone"),
    pytest.param(r"3 \pm 2\sqrt2", r"3-2\sqrt{2}, 3+2\sqrt{2}", 1.0, id="pm: after a term"),
    pytest.param(r"\pm 2", "2", 0.0, id="pm: is two answers"),
    pytest.param(r"\left(\frac13\right)", r"\frac{1}{3}", 1.0, id="paren: redundant"),
    pytest.param(r"\left(\frac13\right)^2", r"\frac{1}{3}", 0.0, id="paren: not when powered"),
    pytest.param(r"\frac{1}{\sqrt2}", r"\frac{\sqrt{2}}{2}", 1.0, id="product: rationalized"),
    pytest.param(r"\sqrt{8}", r"2\sqrt{2}", 1.0, id="product: square taken out"),
    pytest.param(r"\frac{1}{6}\pi", r"\frac{\pi}{6}", 1.0, id="product: coefficient in front"),
    pytest.param("0.5x", r"\frac{x}{2}", 1.0, id="product: decimal coefficient"),
    pytest.param(r"\sqrt{6}", r"2\sqrt{2}", 0.0, id="product: other root"),
    pytest.param(r"\pi^2", r"2\pi", 0.0, id="product: powers count"),
    pytest.param(r"\text{on}", r"\text{no}", 0.0, id="product: a word is none"),
    pytest.param("2.5.3", "0.75", 0.0, id="product: junk is none"),
    pytest.param("-1+2x", "2x-1", 1.0, id="sum: any order"),
    pytest.param(r"12\sqrt2+16", r"16+12\sqrt{2}", 1.0, id="sum: of products"),
    pytest.param("1-2x", "2x-1", 0.0, id="sum: signs count"),
    pytest.param(r"2\times-3", "-3+2", 0.0, id="sum: a sign after an operator starts no term"),
    pytest.param(r"\frac{25}{8}", r"3\frac18", 1.0, id="mixed number"),
    pytest.param(r"\frac{3}{8}", r"3\frac18", 0.0, id="mixed number: not a product"),
    pytest.param(r"x^{2}", "x^2", 1.0, id="one-character group"),
    pytest.param("1001_{2}", "1001_2", 1.0, id="one-character group: base"),
    pytest.param("1001", "1001_2", 0.0, id="base: kept"),
]


@pytest.mark.parametrize("pred,gold,expected", MATH_RULES)
def test_math_rule(pred, gold, expected):
    assert score("math", f"The answer is $\\boxed{{{pred}}}$.", gold) == expected
    assert math_equal(gold, pred) == math_equal(pred, gold)  # symmetric
