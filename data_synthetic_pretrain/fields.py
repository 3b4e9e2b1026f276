"""The attribute vocabularies of Capo's synthetic people: names, cities, universities, majors, companies.

They are our own lists. They ship as text files in `fields/` (UTF-8,
LF, one entry per line) so every machine reads the same lists whatever Faker version it has. `build_fields()`
rebuilds them from Faker's en_US word lists and a fixed seed (the shipped files come from Faker 40.54.0);
`python -m data_synthetic_pretrain.fields` rewrites the files (only needed if the lists are meant to change, which
changes every Capo dataset).

first_name.txt lists 200 female given names, then 200 male ones (Capo picks the pronoun from that half); cities are
"City, ST"; companies are "Company; City, ST" where the second part is the headquarters city.
"""

import os
import random
import sys
from functools import cache

from .atomic import atomic_output

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fields")
SEED = 2024
FEMALE_FIRST_NAMES = 200
SIZES = {
    "first_name": 400,
    "middle_name": 400,
    "last_name": 1000,
    "city": 200,
    "university": 300,
    "major": 100,
    "company": 263,
}

# Majors are a hand-written list (Faker has none); 100 entries.
MAJORS = (
    "Accounting", "Aerospace Engineering", "African American Studies", "Agricultural Science", "Animal Science",
    "Anthropology", "Applied Mathematics", "Archaeology", "Architecture", "Art History", "Astronomy", "Astrophysics",
    "Biochemistry", "Bioengineering", "Bioinformatics", "Biology", "Biomedical Engineering", "Botany",
    "Business Administration", "Chemical Engineering", "Chemistry", "Child Development", "Civil Engineering",
    "Classics", "Cognitive Science", "Communications", "Comparative Literature", "Computer Engineering",
    "Computer Science", "Construction Management", "Creative Writing", "Criminal Justice", "Culinary Arts",
    "Dance", "Data Science", "Dental Hygiene", "Earth Science", "Ecology", "Economics", "Education",
    "Electrical Engineering", "English Literature", "Environmental Engineering", "Environmental Science",
    "Epidemiology", "Film Studies", "Finance", "Fine Arts", "Food Science", "Forensic Science", "Forestry",
    "French", "Genetics", "Geography", "Geology", "German", "Graphic Design", "Health Administration", "History",
    "Hospitality Management", "Human Resources", "Industrial Design", "Industrial Engineering",
    "Information Systems", "International Relations", "Journalism", "Kinesiology", "Linguistics", "Marine Biology",
    "Marketing", "Materials Science", "Mathematics", "Mechanical Engineering", "Microbiology", "Music",
    "Music Composition", "Neuroscience", "Nuclear Engineering", "Nursing", "Nutrition", "Oceanography",
    "Petroleum Engineering", "Pharmacology", "Philosophy", "Photography", "Physics", "Political Science",
    "Psychology", "Public Health", "Public Policy", "Religious Studies", "Social Work", "Sociology",
    "Software Engineering", "Spanish", "Statistics", "Supply Chain Management", "Theater", "Urban Planning",
    "Zoology",
)  # fmt: skip


def build_fields(seed: int = SEED) -> dict[str, list[str]]:
    """Every list, from Faker's en_US word lists (sorted, so their order in Faker does not matter) and
    `random.Random(seed)`; names and cities are distinct within each list."""
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.company.en_US import Provider as Company
    from faker.providers.person.en_US import Provider as Person

    rng = random.Random(seed)
    female, male = set(Person.first_names_female), set(Person.first_names_male)
    first = rng.sample(sorted(female - male), FEMALE_FIRST_NAMES) + rng.sample(
        sorted(male - female), SIZES["first_name"] - FEMALE_FIRST_NAMES
    )
    middle = rng.sample(sorted(set(Person.first_names)), SIZES["middle_name"])
    last_pool = sorted(set(Person.last_names))
    last = rng.sample(last_pool, SIZES["last_name"])
    # Faker lists DC among the abbreviations but not among the state names; leave it out so the two align.
    states = dict(zip([a for a in Address.states_abbr if a != "DC"], Address.states, strict=True))
    abbrs = sorted(states)

    def unique(make, count, taken=()):
        seen, out = set(taken), []
        while len(out) < count:
            item = make()
            if item not in seen:
                seen.add(item)
                out.append(item)
        return out

    def town():  # a made-up US town name in the style of Faker's city formats
        prefix, name = rng.choice(Address.city_prefixes), rng.choice(sorted(female | male) + last_pool)
        suffix = rng.choice(Address.city_suffixes)
        return rng.choice((f"{prefix} {name}{suffix}", f"{prefix} {name}", f"{name}{suffix}"))

    def city():
        return f"{town()}, {rng.choice(abbrs)}"

    cities = unique(city, SIZES["city"])

    def university():
        place, state = rng.choice(cities).split(", ")
        name = rng.choice(last_pool)
        return rng.choice(
            (
                f"University of {place}",
                f"{name} University",
                f"{name} College",
                f"{states[state]} State University",
                f"{place} Institute of Technology",
                f"{name} Polytechnic Institute",
                f"University of {states[state]} at {place}",
                f"{place} College of Arts and Sciences",
            )
        )

    def company():
        a, b, c = rng.sample(last_pool, 3)
        return rng.choice(
            (f"{a} {rng.choice(Company.company_suffixes)}", f"{a}-{b}", f"{a}, {b} and {c}", f"{a} {b} Holdings")
        )

    # Headquarters: about half in the birth-city list, half elsewhere, so a work city may or may not be a birth city.
    companies = [
        f"{name}; {rng.choice(cities) if rng.random() < 0.5 else city()}" for name in unique(company, SIZES["company"])
    ]
    return {
        "first_name": first,
        "middle_name": middle,
        "last_name": last,
        "city": cities,
        "university": unique(university, SIZES["university"]),
        "major": list(MAJORS),
        "company": companies,
    }


def write_fields(folder: str = FOLDER) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, items in build_fields().items():
        with atomic_output(os.path.join(folder, f"{name}.txt"), overwrite=True, newline="\n") as f:
            f.write("\n".join(items) + "\n")


@cache
def _read(name: str) -> tuple[str, ...]:
    with open(os.path.join(FOLDER, f"{name}.txt"), encoding="utf-8") as f:
        items = tuple(line.strip() for line in f if line.strip())
    if len(items) != SIZES[name]:
        raise ValueError(f"{name}.txt holds {len(items)} entries; expected {SIZES[name]}")
    return items


def first_names() -> tuple[str, ...]:
    """400 given names: the first 200 are female, the last 200 male."""
    return _read("first_name")


def middle_names() -> tuple[str, ...]:
    return _read("middle_name")


def last_names() -> tuple[str, ...]:
    return _read("last_name")


def cities() -> tuple[str, ...]:
    """200 "City, ST"."""
    return _read("city")


def universities() -> tuple[str, ...]:
    return _read("university")


def majors() -> tuple[str, ...]:
    return _read("major")


def companies() -> tuple[str, ...]:
    """263 "Company; City, ST" (the city is the headquarters, Capo's work city)."""
    return _read("company")


if __name__ == "__main__":
    write_fields(sys.argv[1] if len(sys.argv) > 1 else FOLDER)
