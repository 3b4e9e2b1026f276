"""Capo's wording, all our own: biography sentences, QA questions and bioR prompt pieces.

A biography sentence is a core phrasing plus an optional trailing embellishment; every combination is a distinct
template (10 x 5 = 50 per attribute). In a template "{s}" is the grammatical subject (a full name or a pronoun,
lower-cased when it is not the first word) and "{v}" is the attribute value. Templates contain no other pronoun, no
"." and no "?", so a biography splits into its sentences at ". ".
"""

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")

_CORES = {
    "birth_date": (
        "{s} was born on {v}",
        "{s} came into the world on {v}",
        "On {v}, {s} was born",
        "{s} arrived on {v}",
        "{s} entered life on {v}",
        "{s} was delivered at a local hospital on {v}",
        "{s} celebrates the anniversary of {v} as a birthday",
        "{s} first saw daylight on {v}",
        "{s} counts {v} as the day of birth",
        "{s} was born at dawn on {v}",
    ),
    "birth_city": (
        "{s} was born in {v}",
        "{s} spent the first years of childhood in {v}",
        "{s} comes from {v}",
        "{s} is a native of {v}",
        "{s} traces family roots back to {v}",
        "{s} started life in {v}",
        "In {v}, {s} was born",
        "{s} calls {v} a hometown",
        "{s} first drew breath in {v}",
        "{s} hails from {v}",
    ),
    "university": (
        "{s} studied at {v}",
        "{s} graduated from {v}",
        "{s} received an education at {v}",
        "{s} attended {v}",
        "{s} earned a degree from {v}",
        "{s} enrolled at {v}",
        "{s} is a graduate of {v}",
        "{s} spent the college years at {v}",
        "{s} completed higher education at {v}",
        "{s} pursued a degree at {v}",
    ),
    "major": (
        "{s} majored in {v}",
        "{s} studied {v}",
        "{s} focused on {v} in college",
        "{s} chose {v} as the main subject",
        "{s} specialized in {v}",
        "{s} earned a degree in {v}",
        "{s} concentrated on {v}",
        "{s} took up {v} as a field of study",
        "The subject {s} picked was {v}",
        "{s} devoted university studies to {v}",
    ),
    "employer": (
        "{s} works for {v}",
        "{s} is employed by {v}",
        "{s} has a job at {v}",
        "{s} earns a living at {v}",
        "{s} joined the staff of {v}",
        "{s} holds a position at {v}",
        "{s} is on the payroll of {v}",
        "{s} built a career at {v}",
        "The company {s} works for is {v}",
        "{s} spends working days at {v}",
    ),
    "work_city": (
        "{s} works in {v}",
        "{s} has a job based in {v}",
        "{s} commutes to an office in {v}",
        "{s} is employed in {v}",
        "{s} earns a living in {v}",
        "{s} spends the working week in {v}",
        "{s} moved to {v} for work",
        "The workplace {s} reports to is in {v}",
        "{s} pursues a career in {v}",
        "{s} carries out daily work in {v}",
    ),
}

_TAILS = {
    "birth_date": (
        "",
        ", a day the relatives still talk about",
        ", as the birth certificate records",
        " after a long wait for the family",
        ", a date kept in the family album",
    ),
    "birth_city": (
        "",
        ", a place remembered with affection",
        ", where the family lived at the time",
        " and still visits it often",
        ", a city of quiet streets and busy markets",
    ),
    "university": (
        "",
        " with the help of a scholarship",
        ", a school known for demanding courses",
        " after months of applications",
        " and made lasting friends there",
    ),
    "major": (
        "",
        " with great enthusiasm",
        ", a field that matched a long-held curiosity",
        " under the guidance of patient mentors",
        " and finished near the top of the class",
    ),
    "employer": (
        "",
        ", a company with a friendly culture",
        " and enjoys the work there",
        ", where colleagues value every contribution",
        " after a competitive hiring process",
    ),
    "work_city": (
        "",
        ", a city with plenty of opportunities",
        " and likes the local atmosphere",
        ", not far from a lively downtown",
        " these days",
    ),
}

BIO_TEMPLATES = {a: tuple(core + tail + "." for core in _CORES[a] for tail in _TAILS[a]) for a in ATTRIBUTES}

# One fixed question per attribute (extraction is measured on one wording, as in Part 3.1).
QUESTIONS = {
    "birth_date": "When was {s} born?",
    "birth_city": "In which city was {s} born?",
    "university": "Which university did {s} attend?",
    "major": "What did {s} study in college?",
    "employer": "Which company does {s} work for?",
    "work_city": "In which city does {s} work?",
}

# bioR prompts: an instruction (mode 0: plain; mode 1: also asks for creativity and a varied sentence order), then
# four facts in random order, each phrased by one of a few patterns.
BIOR_INSTRUCTIONS = (
    "Please write a biography of about {w} words for a person named {s}, using these facts.",
    "Compose a {w}-word biography of {s} from the facts below. Be inventive with the details and present the facts in"
    " any order you like, mixing up the order of the sentences.",
)
BIOR_FACTS = {
    "education": (
        "Studied {major} at {university}.",
        "Education: a degree in {major} from {university}.",
        "Holds a {major} degree from {university}.",
        "Attended {university}, majoring in {major}.",
    ),
    "birth_city": (
        "Hometown: {birth_city}.",
        "Born and raised in {birth_city}.",
        "Place of birth: {birth_city}.",
    ),
    "job": (
        "Works for {employer} in {work_city}.",
        "Employer: {employer}, located in {work_city}.",
        "Has a job at {employer}, in {work_city}.",
        "Employed in {work_city} by {employer}.",
    ),
    "birth_date": (
        "Date of birth: {birth_date}.",
        "Birthday: {birth_date}.",
    ),
}
BIOR_WORDS = (50, 199)  # word count asked for, uniform in this range
