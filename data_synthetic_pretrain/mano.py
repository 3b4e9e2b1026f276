"""Mano: knowledge manipulation. A random arithmetic expression mod 23 with l binary operators, in prefix
notation; the model must output its value with no intermediate steps (spec data.md §3).

Layout: [9999 or 9998] + [10*l + {0,1}] + expression + [10*l + 4 + {0,1}] + [5000 + value]. Operators are ids
1-4 (+, -, *, /) or their aliases 5-8; values are 5000 + v. The {0,1} choices and the aliases are fair coins when
`augment` is on ("knowledge augmentation"). Training draws l uniformly from 1..L, the test split uses exactly L.
Labels (the reference returns none; our choice): 1 on the final value only, the one token that is determined by
the sequence yet not copyable from it; the answer marker carries a random alias bit, so it is not a target.
"""

from dataclasses import dataclass

from .common import BOS, randbelow

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


def _apply(op: int, a: int, b: int, mod: int):
    if op == 1:
        return (a + b) % mod
    if op == 2:
        return (a - b) % mod
    if op == 3:
        return (a * b) % mod
    return None if b % mod == 0 else (a * pow(b, -1, mod)) % mod


def _expression(rng, size: int, params: ManoParams):
    """(tokens, value) of a random expression with `size` operators; value None on a division by zero."""
    if size == 0:
        v = randbelow(rng, params.mod)
        return [VALUE + v], v
    op = OPERATORS[params.ops[randbelow(rng, len(params.ops))]]
    left_size = randbelow(rng, size)
    left, a = _expression(rng, left_size, params)
    right, b = _expression(rng, size - 1 - left_size, params)
    alias = 4 if params.augment and rng.random() < 0.5 else 0
    value = None if a is None or b is None else _apply(op, a, b, params.mod)
    return [op + alias, *left, *right], value


def mano_sample(params: ManoParams, rng, split: str) -> dict:
    size = params.L if split == "test" else 1 + randbelow(rng, params.L)
    while True:
        expression, value = _expression(rng, size, params)
        if value is not None:
            break

    def coin():
        return int(params.augment and rng.random() < 0.5)

    tokens = [BOS - coin(), 10 * size + coin(), *expression, 10 * size + 4 + coin(), VALUE + value]
    labels = [0] * (len(tokens) - 1) + [1]
    return {"tokens": tokens, "labels": labels, "meta": {"l": size, "value": value}}


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
