"""The personas reward: lexicon matching and the score of one text for one persona.

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
"""

from __future__ import annotations

import re

from pgrpo.tasks.personas.world import BY_NAME, GENRE_EXTRAS, GENRES, STYLES

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
