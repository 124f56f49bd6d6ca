"""The ``personas`` task: seven synthetic users, each with a linguistic style and a music genre.

This is task 2 of the P-GRPO paper (synthetic personas). Every prompt names who is asking and
asks for a music recommendation or description::

    Eleanor, a retired judge, asks: Can you recommend some music for a rainy evening?

The preference group (column ``group``, a ``str``) is the persona's name. The personas are

    group    asking                              style         genre       default share
    eleanor  a retired judge                     formal        classical   0.40
    jamal    a college student                   casual        hip hop     0.20
    sofia    a fitness instructor                enthusiastic  electronic  0.15
    hank     a long-haul truck driver            nostalgic     country     0.10
    iris     a watercolour painter               poetic        jazz        0.07
    ravi     a sound engineer                    technical     rock        0.04
    kemar    a beach bartender                   humorous      reggae      0.04

Prompts do not state the preferences (``describe_preferences=True`` adds them), so a policy
must learn them from the reward. With ``anonymous=True`` they do not name the persona either
("A listener asks: ..."): personas who want different answers then send indistinguishable
prompts, and the group is known only from the dataset's ``group`` column.

Genres and styles are lexicons of words and phrases (genre names, instruments, forms, artists;
style markers such as "certainly", "gonna", "whispers", "bpm"), disjoint across lexicons and
matched on lowercase words, leftmost-longest, so the reward reads any text: a word-level toy
model's output or a real instruct model's prose.

Reward of a completion with w words for persona p (preferred genre g, style s), in [0, 1]:

    genre   = min(#distinct g terms, 2) / 2 * 0.5 ** (#other genres mentioned)
    style   = min(#distinct s markers, 2) / 2 * 0.5 ** (#other styles used)
    quality = length * repetition * density
      length     = w / min_words if w < min_words; 1 - (w - max_words) / max_words (floored at 0)
                   if w > max_words; else 1   (empty text: 0)
      repetition = #distinct word trigrams / #trigrams (distinct words / w below 3 words)
      density    = min(1, (1 - c / w) / 0.25), c = words inside lexicon matches
    dense   = (genre + style) / 2 * quality
    binary  = 1[dense >= 0.75]

Counting distinct terms with saturation makes keyword repetition worthless (and the trigram
factor penalises it); naming every genre or style is divided by 2 per off-preference one;
keyword lists without prose lose the density factor; empty, too short and too long text lose
the length factor. Then ``reward = reward_scale[p] * (dense or binary) + noise`` with noise
~ N(0, reward_noise^2) clipped to +-4 reward_noise, drawn from a generator seeded by ``seed``
that lives in the reward function: a task rebuilt with the same seed replays the same noise
for the same sequence of calls (same order and batch sizes); the noise does not depend on
the text, so it cannot be exploited.

``sft_dataset`` holds templated completions (about 10-25 words) for every persona in equal
numbers; each completion's genre and style are independently the persona's own with
probability ``sft_preference`` (one for all personas, or one each) and otherwise uniform over
all seven, so a warm-started policy writes valid, on-topic answers and leaves room for RL to
personalise them (1.0 makes every completion on-preference). A persona given 0 starts behind:
its own genre and style appear only by the uniform draw (1/7 each, both together 1/49), so RL
must find them.

``shares_with(kemar=0.01)`` gives train shares with the named personas fixed and the others
scaled from their defaults to fill the rest (the imbalance regimes of ``pgrpo bench``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasets import Dataset

from pgrpo.tasks.base import Task, completion_text, register_task


@dataclass(frozen=True)
class Persona:
    """A synthetic user: group label, who they are, preferred style and genre, default train share."""

    name: str
    bio: str
    style: str
    genre: str
    share: float


@dataclass(frozen=True)
class Genre:
    """A genre's display name, its terms usable in templates (instruments, forms) and artists."""

    name: str
    terms: tuple[str, ...]
    artists: tuple[str, ...]


PERSONAS: tuple[Persona, ...] = (
    Persona("eleanor", "a retired judge", "formal", "classical", 0.40),
    Persona("jamal", "a college student", "casual", "hiphop", 0.20),
    Persona("sofia", "a fitness instructor", "enthusiastic", "electronic", 0.15),
    Persona("hank", "a long-haul truck driver", "nostalgic", "country", 0.10),
    Persona("iris", "a watercolour painter", "poetic", "jazz", 0.07),
    Persona("ravi", "a sound engineer", "technical", "rock", 0.04),
    Persona("kemar", "a beach bartender", "humorous", "reggae", 0.04),
)
BY_NAME: dict[str, Persona] = {persona.name: persona for persona in PERSONAS}

GENRES: dict[str, Genre] = {
    "classical": Genre(
        "classical",
        ("symphony", "concerto", "sonata", "string quartet", "opera"),
        ("mozart", "beethoven", "bach", "chopin", "debussy", "vivaldi"),
    ),
    "hiphop": Genre(
        "hip hop",
        ("freestyle", "turntable", "boom bap", "breakbeat", "mixtape"),
        ("kendrick lamar", "tupac", "lauryn hill", "nas", "outkast"),
    ),
    "electronic": Genre(
        "electronic",
        ("techno", "synthesizer", "synth", "drum and bass", "rave", "house music"),
        ("daft punk", "aphex twin", "kraftwerk", "chemical brothers", "avicii"),
    ),
    "country": Genre(
        "country",
        ("banjo", "fiddle", "steel guitar", "honky tonk", "bluegrass"),
        ("dolly parton", "johnny cash", "willie nelson", "patsy cline", "garth brooks"),
    ),
    "jazz": Genre(
        "jazz",
        ("saxophone", "trumpet", "bebop", "swing", "big band", "improvisation"),
        ("miles davis", "john coltrane", "ella fitzgerald", "duke ellington", "thelonious monk"),
    ),
    "rock": Genre(
        "rock",
        ("electric guitar", "guitar riff", "power chord", "distortion"),
        ("led zeppelin", "queen", "rolling stones", "nirvana", "pink floyd"),
    ),
    "reggae": Genre(
        "reggae",
        ("dub", "ska", "rocksteady", "offbeat"),
        ("bob marley", "peter tosh", "jimmy cliff", "toots and the maytals", "burning spear"),
    ),
}
# Words a real model may use for a genre beyond the template vocabulary.
GENRE_EXTRAS: dict[str, tuple[str, ...]] = {
    "classical": ("classical music", "orchestra", "orchestral", "symphonies", "concertos", "sonatas", "piano sonata"),
    "hiphop": ("hiphop", "rap", "rapper", "rappers", "rhymes", "beats", "turntables", "mixtapes"),
    "electronic": ("edm", "synths", "synthesizers", "electronica", "dance music", "dj"),
    "country": ("country music", "nashville", "cowboy", "americana"),
    "jazz": ("jazz music", "saxophonist", "bossa nova", "jazz standards"),
    "rock": ("rock music", "rock and roll", "guitar solo", "power chords", "the beatles", "ac dc", "classic rock"),
    "reggae": ("reggae music", "jamaica", "jamaican", "roots reggae", "dancehall"),
}
STYLES: dict[str, tuple[str, ...]] = {
    "formal": (
        "certainly", "indeed", "furthermore", "moreover", "i would recommend", "i would suggest", "distinguished",
        "refined", "esteemed", "respectfully", "sincerely", "one might", "exquisite",
    ),
    "casual": (
        "hey", "yeah", "gonna", "kinda", "cool", "chill", "dude", "vibes", "no worries", "lol", "stuff",
        "pretty sweet",
    ),
    "enthusiastic": (
        "amazing", "incredible", "wow", "fantastic", "absolutely", "thrilling", "awesome", "unbelievable",
        "so much fun", "electrifying", "spectacular",
    ),
    "nostalgic": (
        "remember", "memories", "back in the day", "childhood", "reminds me", "those days", "years ago",
        "old times", "used to", "nostalgic", "growing up",
    ),
    "poetic": (
        "moonlight", "whispers", "whisper", "dreams", "velvet", "golden", "like rain", "starlight", "drifting",
        "twilight", "tender", "echoes",
    ),
    "technical": (
        "tempo", "bpm", "harmonic", "harmonics", "timbre", "frequency", "frequencies", "chord progression",
        "syncopation", "time signature", "dynamic range", "modulation",
    ),
    "humorous": (
        "haha", "joke", "funny", "hilarious", "silly", "laugh", "goofy", "punchline", "giggle", "no kidding",
    ),
}  # fmt: skip

# Completion templates per style; {g} genre name, {t} genre term, {a} artist. Each uses >= 2 markers of its style.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "formal": (
        "Certainly. I would recommend the {t} of {a}, a refined choice of {g} music.",
        "Indeed, {a} is a distinguished name in {g}. I would suggest beginning with the {t}.",
        "I would recommend {a}. Furthermore, the {t} offers an exquisite introduction to {g}.",
        "Respectfully, one might begin with {a}, whose {g} {t} remains a refined and esteemed work.",
    ),
    "casual": (
        "Hey, check out {a}. Their {g} stuff is super chill, perfect {t} vibes.",
        "Yeah, you are gonna like {a}. Kinda {g} with a cool {t} going on.",
        "Dude, put on some {g}. {a} has a {t} that is pretty sweet, no worries.",
        "Hey, just play {a}. Cool {g}, chill {t}, good vibes all around lol.",
    ),
    "enthusiastic": (
        "Wow, you absolutely have to hear {a}! That {g} {t} is amazing!",
        "{a} is incredible! Their {t} makes {g} feel fantastic and thrilling!",
        "Absolutely go for {g}! {a} and that awesome {t} are spectacular!",
        "Wow, {a} is unbelievable! The {t} is so much fun, pure {g} energy!",
    ),
    "nostalgic": (
        "I remember playing {a} back in the day. That {g} {t} still brings back memories.",
        "{a} reminds me of my childhood, years ago, when {g} and a good {t} filled the evenings.",
        "Those days of {g} were special. Put on {a}, the {t} still reminds me of home.",
        "Growing up, we used to play {a} on long nights. Real {g}, that {t}.",
    ),
    "poetic": (
        "Let {a} flow through your evening, a {g} {t} like moonlight on water, soft as velvet.",
        "The {t} of {a} whispers like rain, golden {g} for tender hours.",
        "In the twilight, {a} plays {g} like dreams, a {t} that echoes softly.",
        "Close your eyes to {a}, where {g} glows like starlight and each {t} whispers.",
    ),
    "technical": (
        "Try {a}. The {g} {t} sits at a steady tempo around 120 bpm with rich harmonic detail.",
        "{a} is a good {g} pick: wide dynamic range, clean timbre and a clear chord progression in the {t}.",
        "Listen to {a} for the {t}. Notice the syncopation and the odd time signature, classic {g}.",
        "For {g}, study {a}: the {t} uses subtle modulation and a balanced frequency spectrum.",
    ),
    "humorous": (
        "Haha, try {a}. That {g} {t} is so good it is almost a joke, seriously funny.",
        "Put on {a}! Fair warning: the {t} may cause silly dancing and goofy {g} grins.",
        "{a} for {g}, no kidding. The {t} will make you laugh, hilarious in the best way.",
        "Here is a joke: what plays {g} all night? {a} and a {t}, haha.",
    ),
}
REQUESTS: tuple[str, ...] = (
    "Can you recommend some music for {o}?",
    "What should I listen to during {o}?",
    "Suggest a song for {o}.",
    "Describe an album I would enjoy for {o}.",
    "I need a playlist for {o}. Any ideas?",
    "Tell me about an artist I should hear during {o}.",
)
OCCASIONS: tuple[str, ...] = (
    "a rainy evening", "a long drive", "my morning run", "a dinner party", "the commute", "a quiet sunday",
    "cooking dinner", "a road trip", "late night studying", "a birthday party", "a lazy afternoon", "a workout",
)  # fmt: skip
OFF_PREFERENCE_FACTOR = 0.5  # genre/style scores are multiplied by this per off-preference genre/style present
SATURATION = 2  # distinct on-preference terms that earn full genre/style credit
MAX_DENSITY = 0.75  # fraction of words inside lexicon matches above which the density factor falls to 0 at 1.0
BINARY_THRESHOLD = 0.75
NOISE_CLIP = 4.0  # noise is clipped to +- NOISE_CLIP * reward_noise


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _build_lexicon() -> dict[tuple[str, ...], tuple[str, str]]:
    """Map every term (as a word tuple) to ("genre" | "style", label); terms must be unique across lexicons."""
    entries: list[tuple[str, str, str]] = [("style", style, marker) for style, ms in STYLES.items() for marker in ms]
    for key, genre in GENRES.items():
        terms = (genre.name, *genre.terms, *genre.artists, *GENRE_EXTRAS[key])
        entries += [("genre", key, term) for term in terms]
    lexicon: dict[tuple[str, ...], tuple[str, str]] = {}
    for kind, label, term in entries:
        words = tuple(_words(term))
        if words in lexicon:
            raise ValueError(f"Lexicon term {term!r} appears twice ({lexicon[words]} and {(kind, label)}).")
        lexicon[words] = (kind, label)
    return lexicon


LEXICON = _build_lexicon()
_BY_FIRST_WORD: dict[str, list[tuple[str, ...]]] = {}
for _term in sorted(LEXICON, key=len, reverse=True):
    _BY_FIRST_WORD.setdefault(_term[0], []).append(_term)


def find_terms(text: str) -> tuple[list[tuple[str, str, str]], int, list[str]]:
    """Leftmost-longest, non-overlapping lexicon matches in ``text``.

    Returns (matches as (kind, label, term), number of words inside matches, the text's words).
    """
    words = _words(text)
    matches: list[tuple[str, str, str]] = []
    covered, i = 0, 0
    while i < len(words):
        term = next((t for t in _BY_FIRST_WORD.get(words[i], ()) if tuple(words[i : i + len(t)]) == t), None)
        if term is None:
            i += 1
            continue
        matches.append((*LEXICON[term], " ".join(term)))
        covered += len(term)
        i += len(term)
    return matches, covered, words


def score(text: str, persona: str, min_words: int = 8, max_words: int = 64) -> dict[str, float]:
    """Dense reward of ``text`` for ``persona`` and its factors (see the module docstring), all in [0, 1]."""
    if persona not in BY_NAME:
        raise ValueError(f"Unknown persona {persona!r}; the personas are {', '.join(BY_NAME)}.")
    matches, covered, words = find_terms(text)
    n = len(words)
    if n == 0:
        return dict.fromkeys(("genre", "style", "length", "repetition", "density", "reward"), 0.0)
    preferred = {"genre": BY_NAME[persona].genre, "style": BY_NAME[persona].style}
    parts: dict[str, float] = {}
    for kind, want in preferred.items():
        on = {term for k, label, term in matches if k == kind and label == want}
        off = {label for k, label, _ in matches if k == kind and label != want}
        parts[kind] = min(len(on), SATURATION) / SATURATION * OFF_PREFERENCE_FACTOR ** len(off)
    if n < min_words:
        parts["length"] = n / min_words
    else:
        parts["length"] = max(0.0, 1.0 - max(0, n - max_words) / max_words)
    grams = list(zip(words, words[1:], words[2:], strict=False)) if n >= 3 else [(w,) for w in words]
    parts["repetition"] = len(set(grams)) / len(grams)
    parts["density"] = min(1.0, (1.0 - covered / n) / (1.0 - MAX_DENSITY))
    quality = parts["length"] * parts["repetition"] * parts["density"]
    parts["reward"] = (parts["genre"] + parts["style"]) / 2 * quality
    return parts


def _counts(shares: Sequence[float], total: int) -> list[int]:
    """Largest-remainder rounding of ``total * shares`` (shares normalised to sum 1)."""
    weights = np.asarray(shares, dtype=np.float64) / sum(shares)
    raw = weights * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[rng.integers(len(options))]


@dataclass(frozen=True)
class PromptStyle:
    """What a prompt says about who asks: their preferences (``describe``), and their name and bio (unless
    ``anonymous``)."""

    describe: bool = False
    anonymous: bool = False


def _prompt(persona: Persona, rng: np.random.Generator, style: PromptStyle) -> str:
    taste = f"who loves {GENRES[persona.genre].name} music and a {persona.style} tone" if style.describe else ""
    if style.anonymous:
        who = " ".join(filter(None, ["A listener", taste]))
    else:
        who = ", ".join(filter(None, [persona.name.capitalize(), persona.bio, taste])) + ","
    request = _pick(REQUESTS, rng).format(o=_pick(OCCASIONS, rng))
    return f"{who} asks: {request}"


def _rows(sizes: Sequence[int], rng: np.random.Generator, prompt_style: PromptStyle) -> dict[str, list[str]]:
    groups = [persona.name for persona, size in zip(PERSONAS, sizes, strict=True) for _ in range(size)]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    return {"prompt": [_prompt(BY_NAME[g], rng, prompt_style) for g in groups], "group": groups}


def _completion(genre: str, style: str, rng: np.random.Generator) -> str:
    """One templated answer (leading space: TRL concatenates prompt + completion) in ``style`` about ``genre``."""
    g = GENRES[genre]
    return " " + _pick(TEMPLATES[style], rng).format(g=g.name, t=_pick(g.terms, rng), a=_pick(g.artists, rng).title())


def _sft_rows(
    num_sft: int, preference: dict[str, float], rng: np.random.Generator, prompt_style: PromptStyle
) -> dict[str, list[str]]:
    """Warm-start pairs, equal numbers per persona; ``preference[name]``: P(genre is the persona's own), and
    independently P(style is)."""
    rows = _rows(_counts([1.0] * len(PERSONAS), num_sft), rng, prompt_style)
    completions = []
    for name in rows["group"]:
        persona = BY_NAME[name]
        genre = persona.genre if rng.random() < preference[name] else _pick(list(GENRES), rng)
        style = persona.style if rng.random() < preference[name] else _pick(list(STYLES), rng)
        completions.append(_completion(genre, style, rng))
    return {**rows, "completion": completions}


def _per_persona(
    value: Sequence[float] | float, what: str, kind: Literal["positive number", "probability"] = "positive number"
) -> list[float]:
    """One ``kind`` per persona (> 0, or in [0, 1]) from one number or a sequence in PERSONAS order."""
    values = [float(value)] * len(PERSONAS) if isinstance(value, int | float) else [float(v) for v in value]
    in_range = (lambda v: 0 <= v <= 1) if kind == "probability" else (lambda v: v > 0)
    if len(values) != len(PERSONAS) or not all(math.isfinite(v) and in_range(v) for v in values):
        order = ", ".join(p.name for p in PERSONAS)
        raise ValueError(f"{what} needs one {kind} or {len(PERSONAS)} (order: {order}), got {value!r}.")
    return values


def shares_with(**fixed: float) -> list[float]:
    """Train shares in PERSONAS order with the named personas at the given shares and the others scaled from
    their default shares to fill 1 - sum(fixed), rounded to 6 decimals: ``shares_with(ravi=0.02, kemar=0.02)``
    gives two 2% minorities, ``shares_with(kemar=0.01)`` one 1% persona."""
    if unknown := sorted(set(fixed) - set(BY_NAME)):
        raise ValueError(f"Unknown persona(s) {unknown}; the personas are {', '.join(BY_NAME)}.")
    if not all(share > 0 for share in fixed.values()) or sum(fixed.values()) >= 1:
        raise ValueError(f"Fixed shares must be positive and sum below 1, got {fixed}.")
    free = [p.share for p in PERSONAS if p.name not in fixed]
    scaled = iter((np.array(free) / sum(free) * (1 - sum(fixed.values()))).round(6).tolist())
    return [fixed[p.name] if p.name in fixed else next(scaled) for p in PERSONAS]


@register_task("personas")
def build(
    seed: int = 0,
    num_train: int = 2000,
    num_eval: int = 210,
    shares: Sequence[float] | None = None,
    balanced_eval: bool = True,
    reward_scale: Sequence[float] | float | None = None,
    reward_noise: float = 0.0,
    binary: bool = False,
    min_words: int = 8,
    max_words: int = 64,
    num_sft: int = 1400,
    sft_preference: Sequence[float] | float = 0.5,
    describe_preferences: bool = False,
    anonymous: bool = False,
) -> Task:
    """Seven synthetic personas (style x music genre, imbalanced) ask for music; the persona is the group.

    The task is built deterministically from ``seed`` (module docstring).

    seed:          everything random (group order, prompts, SFT completions, reward noise) derives from it.
    num_train:     train rows, split over the personas by ``shares`` with largest-remainder rounding.
    num_eval:      held-out rows, split equally over the personas (``balanced_eval``) or by ``shares``.
    balanced_eval: split the held-out rows equally over the personas; False splits them by ``shares``.
    shares:        7 positive train shares in PERSONAS order, normalised to sum 1; default 0.40, 0.20, 0.15,
                   0.10, 0.07, 0.04, 0.04 (one majority, two 4% minorities).
    reward_scale:  one positive factor, or 7 in PERSONAS order, multiplying that persona's reward.
    reward_noise:  std of the Gaussian noise added to every reward (clipped at +-4 std).
    binary:        reward 1[dense >= 0.75] instead of the dense score.
    min_words, max_words: the length window outside which the length factor falls.
    num_sft:       warm-start prompt/completion pairs, equal numbers per persona.
    sft_preference: probability that an SFT completion's genre (and, independently, style) is the persona's own:
                   one for all personas, or 7 in PERSONAS order (0 for a persona: its warm start rarely writes
                   its genre or style, and RL must find them).
    describe_preferences: state each persona's genre and style in the prompt.
    anonymous:     prompts say "A listener asks: ..." instead of naming the persona, so personas who want
                   different answers send indistinguishable prompts; the group is only in the ``group`` column.
    """
    shares = [p.share for p in PERSONAS] if shares is None else _per_persona(shares, "shares")
    scales = _per_persona(1.0 if reward_scale is None else reward_scale, "reward_scale")
    if not (math.isfinite(reward_noise) and reward_noise >= 0):
        raise ValueError(f"reward_noise is a standard deviation and must be >= 0, got {reward_noise!r}.")
    if not 0 < min_words < max_words:
        raise ValueError(f"Need 0 < min_words < max_words, got min_words={min_words}, max_words={max_words}.")
    preferences = _per_persona(sft_preference, "sft_preference", "probability")
    train_sizes = _counts(shares, num_train)
    eval_sizes = _counts([1.0] * len(PERSONAS) if balanced_eval else shares, num_eval)
    if min(train_sizes) < 1 or min(eval_sizes) < 1:
        raise ValueError(
            f"num_train={num_train} and num_eval={num_eval} leave a persona without rows "
            f"(train sizes {train_sizes}, eval sizes {eval_sizes}); raise them or the smallest shares."
        )
    config = {
        "seed": seed, "num_train": num_train, "num_eval": num_eval, "shares": shares, "balanced_eval": balanced_eval,
        "reward_scale": scales, "reward_noise": reward_noise, "binary": binary, "min_words": min_words,
        "max_words": max_words, "num_sft": num_sft,
        "sft_preference": sft_preference if isinstance(sft_preference, int | float) else preferences,
        "describe_preferences": describe_preferences, "anonymous": anonymous,
    }  # fmt: skip
    data_rng, sft_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    prompt_style = PromptStyle(describe=describe_preferences, anonymous=anonymous)
    train = Dataset.from_dict(_rows(train_sizes, data_rng, prompt_style))
    evaluation = Dataset.from_dict(_rows(eval_sizes, data_rng, prompt_style))
    by_persona = dict(zip(BY_NAME, preferences, strict=True))
    sft = Dataset.from_dict(_sft_rows(num_sft, by_persona, sft_rng, prompt_style))
    scale_of = {persona.name: scale for persona, scale in zip(PERSONAS, scales, strict=True)}
    noise_rng = np.random.default_rng([seed, 2])

    def personas_reward(prompts: list, completions: list, group: list[str] | None = None, **_: object) -> list[float]:
        """Reward (module docstring) of each completion for the persona in the aligned ``group`` column."""
        if group is None:
            raise ValueError("The personas reward needs the 'group' column; keep it in the dataset passed to TRL.")
        rewards = np.array([score(completion_text(c), g, min_words, max_words)["reward"] for c, g in
                            zip(completions, group, strict=True)])  # fmt: skip
        if binary:
            rewards = (rewards >= BINARY_THRESHOLD).astype(np.float64)
        rewards *= np.array([scale_of[g] for g in group])
        if reward_noise > 0:
            limit = NOISE_CLIP * reward_noise
            rewards += np.clip(noise_rng.normal(0.0, reward_noise, len(rewards)), -limit, limit)
        return rewards.tolist()

    spread = NOISE_CLIP * reward_noise
    return Task(
        name="personas",
        description=(
            "Seven synthetic personas ask for music recommendations; each prefers one linguistic style and one "
            "music genre, and the reward scores genre and style match with anti-hacking quality factors."
        ),
        train_dataset=train,
        eval_dataset=evaluation,
        reward_fn=personas_reward,
        group_column="group",
        sft_dataset=sft,
        reward_range=(-spread, max(scales) + spread),
        config=config,
    )
