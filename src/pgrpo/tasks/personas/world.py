"""The seven personas (group label, who they are, style, genre, default train share), the genres' and styles'
vocabularies, the completion templates of the warm start, and the requests prompts are made of."""

from __future__ import annotations

from dataclasses import dataclass


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
