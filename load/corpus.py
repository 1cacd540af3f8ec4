"""The texts of the load runs, shared by the locustfile and the runner's offline ceiling.

Sentences of 4 to 32 words from a small English vocabulary (about 6 to 45 word pieces), drawn from
a seeded generator so every run sends the same distribution of lengths: the offline ceiling is
measured on texts like the ones the servers get. Imports nothing heavy (the locustfile runs under
gevent, the runner next to torch).
"""

from __future__ import annotations

import random

__all__ = ["REFERENCE_TEXTS", "sentence", "sentences"]

_WORDS = (
    "the a an this that some every many few our their my your his her its one two three first last new old "
    "good great small large long short early late young important public private local national social "
    "time year people way day man woman child world life hand part place case week company system program "
    "question work government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father power hour "
    "game line end member law car city community name president team minute idea kid body information back "
    "parent face others level office door health person art war history party result change morning reason "
    "research girl guy moment air teacher force education is was has had does did can will would should "
    "may might must makes takes gives finds tells asks works seems feels tries leaves calls keeps brings "
    "begins helps shows hears plays runs moves lives believes holds writes stands sets learns pays meets "
    "includes continues changes leads understands watches follows stops creates speaks reads spends grows "
    "opens walks wins offers remembers loves considers appears buys waits serves dies sends expects builds "
    "stays falls cuts reaches kills remains suggests raises passes sells requires reports decides pulls "
    "and or but if because while when after before since until although in on at by for with about "
    "against between into through during without under around among quickly slowly never always often"
).split()

# Fixed texts whose vectors the locustfile fetches once, alone, at the start of a run, then checks
# again under load: a mismatch means a caller got another text's vector, or batch company changed it.
REFERENCE_TEXTS = (
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Dynamic batching groups concurrent requests into one forward pass.",
    "What time does the last train to the city leave on Sundays?",
    "cats",
    "A long and winding sentence about the history of the national library, its founders, its many "
    "readers over the years, and the small garden that still grows behind its oldest wing.",
    "Stock markets fell sharply after the central bank raised interest rates again.",
    "Please reset my password; the link in the email has expired.",
)


def sentence(rng: random.Random) -> str:
    """One sentence of 4 to 32 words."""
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 32))]
    return " ".join(words).capitalize() + "."


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences from a generator seeded with ``seed``."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(n)]
