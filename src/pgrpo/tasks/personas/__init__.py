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

Modules: :mod:`.world` (the personas, genres, styles and templates), :mod:`.reward` (the lexicon and the
reward), :mod:`.builder` (prompts, splits, the warm-start data and ``build``).
"""

from pgrpo.tasks.personas.builder import build, shares_with
from pgrpo.tasks.personas.reward import LEXICON, find_terms, score
from pgrpo.tasks.personas.world import BY_NAME, GENRES, PERSONAS, STYLES, TEMPLATES, Genre, Persona

__all__ = [
    "BY_NAME",
    "GENRES",
    "LEXICON",
    "PERSONAS",
    "STYLES",
    "TEMPLATES",
    "Genre",
    "Persona",
    "build",
    "find_terms",
    "score",
    "shares_with",
]
