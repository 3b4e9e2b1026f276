"""Multi-hop birth-year retrieval: find a person's birth year stated in filler text (1-hop), or follow "A was born in
the same year as B" to B's stated year (2-hop).

One sample = N*k distinct synthetic people. The first group of N gets distinct years in 1950..2009, stated directly;
each later group is mapped by a random permutation onto the group before it and stated relative to it. The fact
sentences are scattered, in order, among consecutive background sentences whose tokens (counted with the evaluated
model's tokenizer) add at most the context budget to the prompt. The question asks one person of the last group.

Differences from the reference (see README): the asked person is drawn uniformly from the last group (the reference
always asks the first one, i.e. the first fact sentence for 1-hop); the people, years and question of sample i are
the same at every context length (only the background changes); the budget is checked on the real prompt.
"""

import random
import re
from dataclasses import asdict, dataclass

from data_synthetic_pretrain.fields import first_names, last_names, middle_names

# hops -> number of people per group, as in the paper's 1-hop (N=5, k=1) and 2-hop (N=3, k=2) columns
SETTINGS = {1: 5, 2: 3}
# context label -> background token budget; the paper's columns 0k .. 6k
CONTEXTS = {"0k": 0, "0.5k": 500, "1k": 1000, "2k": 2000, "3k": 3000, "4k": 4000, "5k": 5000, "6k": 6000}
YEARS = range(1950, 2010)

INSTRUCTION = (
    "The text below mentions the birth years of a few people, scattered among sentences that have nothing to do "
    "with them. Some years are given directly. For other people you only learn that they were born in the same "
    "year as someone else, so you have to follow that link to the year that is given directly. Read the text and "
    "complete the answer with the four-digit year."
)


@dataclass(frozen=True)
class MultihopSample:
    prompt: str
    answer: str  # the 4-digit year
    person: str  # whose year is asked
    hops: int
    context: str  # the budget label, e.g. "2k"
    index: int
    background_tokens: int  # how many tokens the background adds to the prompt (<= the budget)

    def to_dict(self) -> dict:
        return asdict(self)


def check_hops(hops) -> None:
    if hops not in SETTINGS:
        raise ValueError(f"unknown hop count '{hops}'; expected one of {', '.join(map(str, SETTINGS))}")


def check_context(label) -> None:
    if label not in CONTEXTS:
        raise ValueError(f"unknown context length {label!r}; expected one of {', '.join(CONTEXTS)}")


def parse_hops(text: str) -> list[int]:
    """Hop counts from a comma list such as "1,2"."""
    items = [item.strip() for item in text.split(",")]
    hops = [int(item) if item.isdigit() else item for item in items]
    for h in hops:
        check_hops(h)
    return hops


def parse_contexts(text: str) -> list[str]:
    """Context labels from a comma list such as "0k,0.5k,2k"."""
    labels = [item.strip() for item in text.split(",")]
    for label in labels:
        check_context(label)
    return labels


def make_facts(rng: random.Random, people: int, hops: int) -> tuple[list[str], str, str]:
    """(fact sentences in text order, asked person, answer year) for `hops` groups of `people` each."""
    if not 1 <= people <= len(YEARS):
        raise ValueError(f"{people} people per group; expected 1..{len(YEARS)} (one distinct year each)")
    firsts, middles, lasts = first_names(), middle_names(), last_names()
    names, seen = [], set()
    while len(names) < people * hops:
        name = f"{rng.choice(firsts)} {rng.choice(middles)} {rng.choice(lasts)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    groups = [names[g * people : (g + 1) * people] for g in range(hops)]
    year_of = dict(zip(groups[0], map(str, rng.sample(YEARS, people)), strict=True))
    facts = [f"{name} was born in the year of {year_of[name]}." for name in groups[0]]
    for previous, group in zip(groups, groups[1:], strict=False):
        for name, other in zip(group, rng.sample(previous, people), strict=True):
            year_of[name] = year_of[other]
            facts.append(f"{name} was born in the same year as {other}.")
    asked = rng.choice(groups[-1])
    return facts, asked, year_of[asked]


def render_prompt(pieces: list[str], person: str, hops: int) -> str:
    """The prompt around the context sentences; it ends right before the year (no trailing space, so a
    tokenizer that glues the space to the number, like GPT-2's, sees its usual " 1987")."""
    context = " ".join(pieces)
    question = f"\n\nAnswer: {person} was born in the year of"
    if hops == 1:
        return context + question
    return f"{INSTRUCTION}\n\n<context>{context}</context>{question}"


def interleave(rng: random.Random, background: list[str], facts: list[str]) -> list[str]:
    """Facts at uniformly random slots among all sentences; both lists keep their order."""
    total = len(background) + len(facts)
    fact_slots = set(rng.sample(range(total), len(facts)))
    facts_left, background_left = iter(facts), iter(background)
    return [next(facts_left) if slot in fact_slots else next(background_left) for slot in range(total)]


class MultihopBuilder:
    """Builds the prompts for one tokenizer and one background corpus.

    `tokenizer` needs `encode(text, add_special_tokens=False) -> list[int]` (any Hugging Face tokenizer). Sample
    (hops, context, index) depends only on these, `seed` and the corpus: every call returns the same sample.
    """

    def __init__(self, tokenizer, sentences, seed: int = 0):
        if not sentences:
            raise ValueError("the background corpus is empty")
        self.tokenizer, self.sentences, self.seed = tokenizer, tuple(sentences), seed
        self._lengths: dict[int, int] = {}  # token counts of the sentences used so far (the corpus may be large)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _sentence_tokens(self, i: int) -> int:
        if i not in self._lengths:
            self._lengths[i] = self.count(self.sentences[i])
        return self._lengths[i]

    def _background(self, rng: random.Random, budget: int) -> list[int]:
        """Indices of consecutive sentences from a random start (wrapping around the corpus at most once) while
        their summed token counts stay within the budget."""
        if budget == 0:
            return []
        start, used, picked = rng.randrange(len(self.sentences)), 0, []
        for step in range(len(self.sentences)):
            i = (start + step) % len(self.sentences)
            used += self._sentence_tokens(i)
            if used > budget:
                break
            picked.append(i)
        return picked

    def sample(self, hops: int, context: str, index: int) -> MultihopSample:
        check_hops(hops)
        check_context(context)
        facts, person, answer = make_facts(random.Random(f"multihop|{hops}|{self.seed}|{index}"), SETTINGS[hops], hops)
        rng = random.Random(f"multihop-background|{hops}|{context}|{self.seed}|{index}")
        budget = CONTEXTS[context]
        picked = self._background(rng, budget)
        bare = self.count(render_prompt(facts, person, hops))
        while True:
            # A sentence tokenized alone can count fewer tokens than inside the prompt (e.g. without the space in
            # front of it); the real prompt decides: drop trailing sentences worth the excess and measure again.
            background = [self.sentences[i] for i in picked]
            prompt = render_prompt(interleave(rng, background, facts), person, hops)
            added = self.count(prompt) - bare
            excess = added - budget
            if excess <= 0:
                break
            while excess > 0 and picked:
                excess -= self._sentence_tokens(picked.pop())
        return MultihopSample(prompt, answer, person, hops, context, index, added)


_YEAR = re.compile(r"\s*(\d{4})(?!\d)")


def extract_year(output: str) -> str | None:
    """The 4-digit number the continuation starts with (after whitespace), or None."""
    match = _YEAR.match(output)
    return match.group(1) if match else None


def is_correct(answer: str, output: str) -> bool:
    """Exact match of the year: the continuation must start with exactly the answer's four digits."""
    return extract_year(output) == answer
