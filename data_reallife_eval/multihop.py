"""Multi-hop birth-year retrieval: find a person's birth year stated in filler text (1-hop), or follow "A was born in
the same year as B" links back to a stated year (k-hop).

One sample = N*k distinct synthetic people in k groups of N. The first group gets N distinct years in 1950..2009,
stated directly ("<Name> was born in the year of <YYYY>."); each later group is mapped by a random permutation onto
the group before it and stated relative to it ("<Name> was born in the same year as <Other>."). The fact sentences are
scattered, in order, among consecutive background sentences whose tokens (counted with the evaluated model's
tokenizer) fill at most the context budget. The question asks about one person of the last group:
"\n\nAnswer me: <Name> was born in the year of". For k >= 2 an instruction paragraph and <context> tags frame the text.

Two settings:
  * "paper" reproduces the published columns' sampling: one Random(42) re-seeded at the start of every (N, k, budget)
    setting and drawn sample after sample; the asked person is the first member of the last group; background from
    a random start sentence, consecutive sentences while their summed token counts stay strictly below the budget
    (stopping at the corpus end); the prompt keeps the trailing space after "of" (and, for k = 1, the space before
    the question's newlines).
  * "ours" (the default) asks a uniformly drawn member of the last group, gives every sample its own RNGs (the same
    people and question at every budget, any call order), fills the budget up to M tokens (wrapping around the corpus
    once) checked on the real prompt, and ends the prompt at "of" (no trailing space, so tokenizers that glue the
    space to the number, like GPT-2's " 1987", see their usual token).
"""

import os
import random
import re
from dataclasses import asdict, dataclass

from data_synthetic_pretrain.fields import first_names, last_names, middle_names

PEOPLE = {1: 5, 2: 3}  # hops -> people per group of the paper's 1-hop (N=5, k=1) and 2-hop (N=3, k=2) columns
# context label -> background token budget; the paper's columns 0k .. 6k (any "<x>k" or plain token count works too)
CONTEXTS = {"0k": 0, "0.5k": 500, "1k": 1000, "2k": 2000, "3k": 3000, "4k": 4000, "5k": 5000, "6k": 6000}
YEARS = range(1950, 2010)
SETTINGS = ("ours", "paper")
PAPER_SEED = 42

INSTRUCTION = (
    "The questions here are about the years in which certain people were born. Those birth years are tucked away "
    "inside unrelated text. For some people the year is given outright; for others the text only says that `name1' "
    "was born in the same year as `name2'."
)


@dataclass  # not frozen: a frozen dataclass's __init__ costs several times more, a tenth of a prompt's build time
class MultihopSample:
    prompt: str
    answer: str  # the 4-digit year
    person: str  # whose year is asked
    hops: int  # k
    context: str  # the budget label, e.g. "2k"
    index: int
    background_tokens: int  # tokens the background adds ("paper": the summed sentence counts it selects by)
    people: int = 5  # N, people per group
    setting: str = "ours"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Task:
    """One row of the result table: k groups of N people."""

    people: int  # N
    hops: int  # k

    @property
    def label(self) -> str:
        return f"{self.hops}-hop" if PEOPLE.get(self.hops) == self.people else f"{self.hops}-hop-N{self.people}"


def check_task(people, hops) -> None:
    if not isinstance(hops, int) or hops < 1:
        raise ValueError(f"unknown hop count {hops!r}; expected an integer >= 1")
    if not isinstance(people, int) or not 1 <= people <= len(YEARS):
        raise ValueError(f"{people!r} people per group; expected 1..{len(YEARS)} (one distinct birth year each)")


def default_people(hops) -> int:
    if hops not in PEOPLE:
        raise ValueError(
            f"unknown hop count '{hops}' without a group size; use 1 or 2 (the paper's N=5 and N=3), or give N and k "
            "as NxK, e.g. --tasks 4x3"
        )
    return PEOPLE[hops]


def budget_of(label: str) -> int:
    """The token budget of a context label: one of CONTEXTS, "<x>k" (x thousand tokens) or a plain token count."""
    if label in CONTEXTS:
        return CONTEXTS[label]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)k|(\d+)", str(label))
    if match is None:
        raise ValueError(
            f"unknown context length {label!r}; expected one of {', '.join(CONTEXTS)}, another '<x>k' or a token count"
        )
    return round(float(match[1]) * 1000) if match[1] else int(match[2])


def parse_hops(text: str) -> list[Task]:
    """Tasks from a comma list of hop counts such as "1,2" (the paper's group sizes)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [Task(default_people(int(h) if h.isdigit() else h), int(h)) for h in items]


def parse_tasks(text: str) -> list[Task]:
    """Tasks from a comma list of NxK items such as "5x1,3x2,4x3"."""
    tasks = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        match = re.fullmatch(r"(\d+)x(\d+)", item)
        if match is None:
            raise ValueError(f"task {item!r}; expected NxK, e.g. 5x1 (N people per group, K hops)")
        task = Task(int(match[1]), int(match[2]))
        check_task(task.people, task.hops)
        tasks.append(task)
    return tasks


def parse_contexts(text: str) -> list[str]:
    """Context labels from a comma list such as "0k,0.5k,2k,1500"."""
    labels = [item.strip() for item in text.split(",") if item.strip()]
    for label in labels:
        budget_of(label)
    return labels


def load_names(folder: str | None = None) -> tuple[tuple[str, ...], ...]:
    """(first, middle, last) name lists: ours (data_synthetic_pretrain.fields), or first_name.txt, middle_name.txt and
    last_name.txt of `folder` (one name a line), e.g. the lists the paper used."""
    if folder is None:
        return first_names(), middle_names(), last_names()
    lists = []
    for name in ("first_name.txt", "middle_name.txt", "last_name.txt"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"names folder {folder!r} has no {name}; expected first_name.txt, middle_name.txt, "
                             "last_name.txt")  # fmt: skip
        with open(path, encoding="utf-8") as f:
            lists.append(tuple(line.strip() for line in f if line.strip()))
        if not lists[-1]:
            raise ValueError(f"{path} holds no names")
    return tuple(lists)


def make_facts(rng: random.Random, people: int, hops: int, names=None, first_asked: bool = False):
    """(fact sentences in text order, asked person, answer year) for `hops` groups of `people` each. Random calls, in
    order: a first, middle and last name per try until people*hops distinct names, the years (one sample), one
    shuffle per later group, then (unless `first_asked`, the paper's fixed choice) the asked person."""
    check_task(people, hops)
    firsts, middles, lasts = names or load_names()
    if len(firsts) * len(middles) * len(lasts) < people * hops:
        raise ValueError(f"{people * hops} distinct full names are needed; the name lists allow fewer")
    choice, full_names, seen = rng.choice, [], set()
    while len(full_names) < people * hops:
        name = f"{choice(firsts)} {choice(middles)} {choice(lasts)}"
        if name not in seen:
            seen.add(name)
            full_names.append(name)
    groups = [full_names[g * people : (g + 1) * people] for g in range(hops)]
    year_of = dict(zip(groups[0], map(str, rng.sample(YEARS, people)), strict=True))
    facts = [f"{name} was born in the year of {year_of[name]}." for name in groups[0]]
    for previous, group in zip(groups, groups[1:], strict=False):
        targets = list(range(people))
        rng.shuffle(targets)
        for name, target in zip(group, targets, strict=True):
            year_of[name] = year_of[previous[target]]
            facts.append(f"{name} was born in the same year as {previous[target]}.")
    asked = groups[-1][0] if first_asked else rng.choice(groups[-1])
    return facts, asked, year_of[asked]


def render_prompt(pieces: list[str], person: str, hops: int, setting: str = "ours", instruction: str = INSTRUCTION):
    """The prompt around the context sentences: the question "Answer me: <person> was born in the year of", after the
    instruction and <context> tags when hops >= 2. "paper" keeps the published spacing (see the module docstring)."""
    context = " ".join(pieces)
    question = f"\n\nAnswer me: {person} was born in the year of"
    if setting == "paper":
        question += " "
        return f"{context} {question}" if hops == 1 else f"{instruction}\n\n<context>{context}</context>{question}"
    return context + question if hops == 1 else f"{instruction}\n\n<context>{context}</context>{question}"


def interleave(rng: random.Random, background: list[str], facts: list[str]) -> list[str]:
    """Facts at uniformly random slots among all sentences; both lists keep their order."""
    slots = sorted(rng.sample(range(len(background) + len(facts)), len(facts)))
    out, taken = [], 0
    for k, slot in enumerate(slots):  # slot - k background sentences come before fact k
        out += background[taken : slot - k]
        taken = slot - k
        out.append(facts[k])
    out += background[taken:]
    return out


class MultihopBuilder:
    """Builds the prompts for one tokenizer and one background corpus.

    `tokenizer` needs `encode(text, add_special_tokens=False) -> list[int]` (any Hugging Face tokenizer). `setting`
    is "ours" or "paper" (module docstring); `instruction` replaces the k >= 2 instruction paragraph; `names` is a
    (first, middle, last) tuple of name lists (default: ours). With "ours", sample (hops, context, index) depends
    only on these, `seed` and the corpus; with "paper", sample i of a setting is the i-th drawn after re-seeding, so
    it also depends on the samples before it (`seed` is not used: the paper's seed is fixed).
    """

    def __init__(self, tokenizer, sentences, seed: int = 0, setting: str = "ours", instruction=None, names=None):
        if not sentences:
            raise ValueError("the background corpus is empty")
        if setting not in SETTINGS:
            raise ValueError(f"unknown multihop setting {setting!r}; expected one of {', '.join(SETTINGS)}")
        if instruction is not None and not instruction.strip():
            raise ValueError("the instruction is empty")
        self.tokenizer, self.sentences, self.seed, self.setting = tokenizer, tuple(sentences), seed, setting
        self.instruction = INSTRUCTION if instruction is None else instruction.strip()
        self.names = names or load_names()
        self._lengths: dict[int, int] = {}  # token counts of the sentences used so far (the corpus may be large)
        self._paper: dict[tuple, tuple] = {}  # (N, k, context) -> (its RNG, samples so far, N, budget)

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

    def _paper_background(self, rng: random.Random, budget: int) -> list[int]:
        """The paper's selection: a random start, then consecutive sentences while the running count stays strictly
        below the budget, stopping at the corpus end."""
        if budget <= 0:
            return []
        start, used, picked = rng.randint(0, len(self.sentences) - 1), 0, []
        for i in range(start, len(self.sentences)):
            if used + self._sentence_tokens(i) >= budget:
                break
            used += self._sentence_tokens(i)
            picked.append(i)
        return picked

    def sample(self, hops: int, context: str, index: int, people: int | None = None) -> MultihopSample:
        if self.setting == "paper":
            stream = self._paper.get((people, hops, context))
            if stream is None:  # a new setting: check it, then start its stream from the paper's seed
                n = default_people(hops) if people is None else people
                check_task(n, hops)
                stream = self._paper[people, hops, context] = (random.Random(PAPER_SEED), [], n, budget_of(context))
            rng, done, n, budget = stream
            while len(done) <= index:
                done.append(self._paper_sample(rng, n, hops, context, budget, len(done)))
            return done[index]
        people = default_people(hops) if people is None else people
        check_task(people, hops)
        budget = budget_of(context)
        facts, person, answer = make_facts(
            random.Random(f"multihop|{people}x{hops}|{self.seed}|{index}"), people, hops, self.names
        )
        rng = random.Random(f"multihop-background|{people}x{hops}|{context}|{self.seed}|{index}")
        picked = self._background(rng, budget)
        bare = self.count(render_prompt(facts, person, hops, instruction=self.instruction))
        while True:
            # A sentence tokenized alone can count fewer tokens than inside the prompt (e.g. without the space in
            # front of it); the real prompt decides: drop trailing sentences worth the excess and measure again.
            background = [self.sentences[i] for i in picked]
            prompt = render_prompt(interleave(rng, background, facts), person, hops, instruction=self.instruction)
            added = self.count(prompt) - bare
            excess = added - budget
            if excess <= 0:
                break
            while excess > 0 and picked:
                excess -= self._sentence_tokens(picked.pop())
        return MultihopSample(prompt, answer, person, hops, context, index, added, people, self.setting)

    def _paper_sample(self, rng, people, hops, context, budget, index) -> MultihopSample:
        facts, person, answer = make_facts(rng, people, hops, self.names, first_asked=True)
        picked = self._paper_background(rng, budget)
        background = [self.sentences[i] for i in picked]
        prompt = render_prompt(interleave(rng, background, facts), person, hops, "paper", self.instruction)
        used = sum(self._sentence_tokens(i) for i in picked)
        return MultihopSample(prompt, answer, person, hops, context, index, used, people, self.setting)

    def samples(self, hops: int, context: str, num: int, people: int | None = None) -> list[MultihopSample]:
        """Samples 0..num-1 of one setting (for "paper": the first num drawn after re-seeding)."""
        return [self.sample(hops, context, index, people) for index in range(num)]


_YEAR = re.compile(r"\s*(\d{4})(?!\d)")


def extract_year(output: str) -> str | None:
    """The 4-digit number the continuation starts with (after whitespace), or None."""
    match = _YEAR.match(output)
    return match.group(1) if match else None


def is_correct(answer: str, output: str) -> bool:
    """Exact match of the year: the continuation must start with exactly the answer's four digits."""
    return extract_year(output) == answer
