"""Mano: knowledge manipulation. A random arithmetic expression mod 23 with l binary operators, in prefix
notation; the model must output its value with no intermediate steps.

Layout: [9999 or 9998] + [10*l + {0,1}] + expression + [10*l + 4 + {0,1}] + [5000 + value]. Operators are ids
1-4 (+, -, *, /) or their aliases 5-8; values are 5000 + v. The {0,1} choices and the aliases are fair coins when
`augment` is on ("knowledge augmentation"). Training draws l uniformly from 1..L, the test split uses exactly L.
Labels: 1 on the final value only, the one token that is determined by
the sequence yet not copyable from it; the answer marker carries a random alias bit, so it is not a target.
"""

import itertools
import math
from dataclasses import dataclass
from functools import cache

from .common import BOS, random_bits

VALUE = 5000
OPERATORS = {"a": 1, "s": 2, "m": 3, "d": 4}  # + - * /; aliases are +4


@dataclass(frozen=True)
class ManoParams:
    L: int  # operators (the maximum in training, exact in test)
    ops: str = "asm"
    mod: int = 23
    augment: bool = True

    def check(self):
        if not 1 <= self.L <= 999:
            raise ValueError(f"Mano L={self.L}; expected 1 <= L <= 999")
        if not self.ops or set(self.ops) - set(OPERATORS):
            raise ValueError(f"Mano ops={self.ops!r}; expected letters from 'asmd'")
        if not 2 <= self.mod < 1000:
            raise ValueError(f"Mano mod={self.mod}; expected 2 <= mod < 1000")


PRESETS = {f"mano-{L}": ManoParams(L) for L in (10, 13, 16)}


@cache
def _tables(params: ManoParams):
    """What a sample needs, per preset:
    - operators: the operator tokens, one uniform pick per operator node (the ids of `ops`, and their aliases with
      `augment`);
    - bits: random bits per attempt, 64 more than the largest sample uses;
    - values_of[t][a * mod + b]: operator token t applied to (a, b), None for a division by zero;
    - twigs: every operator with two leaves, as (value, its tokens backwards), so that one digit draws a whole
      one-operator subtree (a third of all operator nodes)."""
    operators = tuple(OPERATORS[op] + alias for alias in ((0, 4) if params.augment else (0,)) for op in params.ops)
    L, mod = params.L, params.mod
    bits = math.log2(8 * L) + L * math.log2(len(operators) * L) + (L + 1) * math.log2(mod)
    inverse = [None] + [pow(b, -1, mod) if math.gcd(b, mod) == 1 else None for b in range(1, mod)]
    ops = (
        [(a + b) % mod for a in range(mod) for b in range(mod)],
        [(a - b) % mod for a in range(mod) for b in range(mod)],
        [a * b % mod for a in range(mod) for b in range(mod)],
        [None if inverse[b] is None else a * inverse[b] % mod for a in range(mod) for b in range(mod)],
    )
    values_of = [None] + [ops[(t - 1) % 4] for t in range(1, 9)]
    twigs = [
        (values_of[t][a * mod + b], (VALUE + b, VALUE + a, t))
        for t in operators
        for a in range(mod)
        for b in range(mod)
    ]
    return operators, math.ceil(bits) + 64, values_of, twigs


def mano_sample(params: ManoParams, state, split: str) -> dict:
    """One sample; `state` is its hash state (common.sample_hash). Every choice is a digit of one random integer (a
    fresh one for each retry after a division by zero): for an operator node of size s its operator and its left
    subtree's size (uniform in 0..s-1) as one digit in base (operators * s); a node of size 1 as a whole (`twigs`);
    a leaf its value."""
    operators, bits, values_of, twigs = _tables(params)
    mod, choices, n_twigs = params.mod, len(operators), len(twigs)
    x = random_bits(state, 0, bits)
    if split == "test":
        size = params.L
    else:
        x, size = divmod(x, params.L)
        size += 1
    x, coins = divmod(x, 8) if params.augment else (x, 0)
    for attempt in itertools.count(1):
        # the expression backwards (right subtree, left subtree, operator), evaluated on the way with a stack;
        # `pending` holds subtree sizes to expand (>= 0) and operators (~digit < 0) to apply once both are done
        backwards, stack, pending = [], [], [size]
        while pending:
            s = pending.pop()
            if s > 1:
                x, digit = divmod(x, choices * s)
                digit, left = divmod(digit, s)
                pending += (~digit, left, s - 1 - left)
            elif s == 1:
                x, digit = divmod(x, n_twigs)
                value, twig = twigs[digit]
                if value is None:
                    break
                backwards += twig
                stack.append(value)
            elif s == 0:
                x, value = divmod(x, mod)
                backwards.append(VALUE + value)
                stack.append(value)
            else:
                t = operators[~s]
                value = values_of[t][stack.pop() * mod + stack.pop()]
                if value is None:
                    break
                backwards.append(t)
                stack.append(value)
        else:
            break
        x = random_bits(state, attempt, bits)
    question, answer = 10 * size + (coins >> 1 & 1), 10 * size + 4 + (coins >> 2)
    tokens = [BOS - (coins & 1), question, *reversed(backwards), answer, VALUE + value]
    return {"tokens": tokens, "labels": [0] * (len(tokens) - 1) + [1], "meta": {"l": size, "value": value}}


def verify_mano(record: dict) -> str | None:
    """None when the record is a correct Mano sample, else the reason: re-evaluates the prefix expression with a
    stack, independently of the generator."""
    tokens, labels, mod = record["tokens"], record["labels"], record["meta"]["params"]["mod"]
    if len(tokens) < 5 or len(labels) != len(tokens) or tokens[0] not in (BOS, BOS - 1):
        return "too short, wrong BOS, or labels of a different length"
    expression = tokens[2:-2]
    operators = sum(1 for t in expression if 1 <= t <= 8)
    if tokens[1] - 10 * operators not in (0, 1) or tokens[-2] - 10 * operators not in (4, 5):
        return f"question/answer markers {tokens[1]}, {tokens[-2]} do not match {operators} operators"
    stack = []
    for t in reversed(expression):
        if VALUE <= t < VALUE + mod:
            stack.append(t - VALUE)
        elif 1 <= t <= 8 and len(stack) >= 2:
            a, b = stack.pop(), stack.pop()
            value = _reference_apply((t - 1) % 4, a, b, mod)
            if value is None:
                return "division by zero"
            stack.append(value)
        else:
            return f"malformed expression at token {t}"
    if len(stack) != 1 or tokens[-1] != VALUE + stack[0]:
        return f"answer {tokens[-1] - VALUE} but the expression is worth {stack}"
    return None if labels == [0] * (len(tokens) - 1) + [1] else "labels are not 1 on the final value only"


def _reference_apply(op_index: int, a: int, b: int, mod: int):
    """+ - * / mod `mod` for op index 0..3, written apart from the generator's `_apply`."""
    if op_index == 3:
        if b % mod == 0:
            return None
        inverse = next(x for x in range(1, mod) if (b * x) % mod == 1)
        return (a * inverse) % mod
    return ((a + b), (a - b), (a * b))[op_index] % mod
