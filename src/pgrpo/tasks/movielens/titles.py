"""Movie titles: how they are shown, the names they are known by, and finding them in free text.

Titles are matched over normalized words (case, accents and punctuation ignored, "&" = "and");
the year, the article of "Godfather, The" and aliases in parentheses are optional.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_ARTICLES = "the|a|an|il|la|le|les|das|der|die|el"


def normalize(text: str) -> list[str]:
    """Lowercase ASCII words of ``text``: accents stripped, "&" -> "and", "'" dropped, other punctuation a space."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = text.replace("&", " and ").replace("'", "")
    return re.findall(r"[a-z0-9]+", text)


def display_title(title: str, year: bool = True) -> str:
    """The title with a trailing article put in front: "Godfather, The (1972)" -> "The Godfather (1972)".

    ``year=False`` drops the release year: "The Godfather".
    """
    match = re.fullmatch(rf"(.*), ({_ARTICLES})( \(\d{{4}}\))?", title.strip(), flags=re.IGNORECASE)
    shown = title.strip() if match is None else f"{match.group(2)} {match.group(1)}{match.group(3) or ''}"
    return shown if year else re.sub(r"\s*\(\d{4}\)$", "", shown)


def title_names(title: str) -> tuple[set[str], str | None]:
    """The names a title is known by and its year.

    "Seven (Se7en) (1995)" -> ({"Seven (Se7en)", "Seven", "Se7en"}, "1995"); a name ending in an
    article ("Godfather, The") also gives "The Godfather" and "Godfather".
    """
    year = re.search(r"\((\d{4})\)\s*$", title)
    bare = (title[: year.start()] if year else title).strip()
    names = {bare, re.sub(r"\s*\([^)]*\)", "", bare).strip(), *re.findall(r"\(([^)]*)\)", bare)}
    for name in list(names):
        match = re.fullmatch(rf"(.*), ({_ARTICLES})", name, flags=re.IGNORECASE)
        if match is not None:
            names |= {match.group(1), f"{match.group(2)} {match.group(1)}"}
    return names, year.group(1) if year else None


class TitleMatcher:
    """Finds catalogue titles in free text by longest match over normalized words.

    Every title is known by each of its :func:`title_names`, with or without its year. A name
    shared by several movies belongs to the first one given (pass the catalogue most-rated first).
    """

    def __init__(self, titles: Sequence[str], movie_ids: Sequence[int]) -> None:
        self.keys: dict[tuple[str, ...], int] = {}
        for title, movie_id in zip(titles, movie_ids, strict=True):
            names, year = title_names(title)
            for key in (tuple(normalize(name)) for name in names):
                if key:
                    self.keys.setdefault(key, int(movie_id))
                    if year is not None:
                        self.keys.setdefault((*key, year), int(movie_id))
        self.max_len = max(len(key) for key in self.keys)

    def find(self, text: str) -> tuple[list[int], list[int], int]:
        """(movie ids of the title mentions in order, their lengths in words, number of words in ``text``)."""
        words = normalize(text)
        ids, lengths, i = [], [], 0
        while i < len(words):
            for length in range(min(self.max_len, len(words) - i), 0, -1):
                movie_id = self.keys.get(tuple(words[i : i + length]))
                if movie_id is not None:
                    ids.append(movie_id)
                    lengths.append(length)
                    i += length
                    break
            else:
                i += 1
        return ids, lengths, len(words)


def shown_titles(titles: Sequence[str], movie_ids: Sequence[int]) -> dict[int, str]:
    """How prompts and warm-start completions name each catalogue movie: its :func:`display_title` without the
    year (fewer words for a tiny word-level policy to get right), or with it where the year-less name would be
    found as another movie ("Sabrina" in a catalogue holding the 1954 and the 1995 film)."""
    matcher = TitleMatcher(titles, movie_ids)
    shown = {}
    for title, movie_id in zip(titles, movie_ids, strict=True):
        short = display_title(title, year=False)
        shown[int(movie_id)] = short if matcher.find(short)[0] == [int(movie_id)] else display_title(title)
    return shown
