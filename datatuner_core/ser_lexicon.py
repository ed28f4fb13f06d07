"""The slot aligner's data (`ser`): negation cues, yes/no topics, the lexicons of enumerated slot
values (E2E and ViGGO) and which slots are cued, repeated, listed or named.

The lexicons were written against the E2E dev and ViGGO validation references (SER 3.0 % and
1.7 % of their slot values); the test references are only measured: ViGGO 2.1 %, E2E 3.5 %, most
of E2E's being "hallucinations" of slots the cleaned MR dropped although the text states them
("pricey" with priceRange removed).
"""

from __future__ import annotations

NEGATIONS = frozenset(
    "not no never without non lacks lack lacking neither nor nope unavailable isnt doesnt".split()
)
CLAUSE_BREAKS = frozenset("but however although though yet while whereas . ?".split())
NEGATION_WINDOW = 6
STOPWORDS = frozenset("the a an of and s in on for to".split())

YES_NO_TOPICS: dict[str, tuple[str, ...]] = {
    "available_on_steam": ("steam",),
    "has_linux_release": ("linux",),
    "has_mac_release": ("mac", "macs", "macos", "mac os", "os x", "osx", "macintosh", "apple"),
    "has_multiplayer": ("multiplayer", "multi player", "co op", "coop", "cooperative", "online",
                        "with friends", "with other players", "other players", "with others"),
    "familyFriendly": ("family friendly", "family", "families", "kid friendly", "kids",
                       "children", "child friendly", "child", "kid", "kids friendly"),
}  # fmt: skip
# phrases that state "no" without a negation word
NO_FORMS: dict[str, tuple[str, ...]] = {
    "has_multiplayer": ("single player", "singleplayer", "solo", "by yourself", "alone",
                        "on your own", "one player"),
    "familyFriendly": ("adults only", "adult only", "adults", "adult"),
}  # fmt: skip

_RATING_CUES = ("rating", "rated", "ratings", "rate", "star", "stars", "review", "reviews",
                "customer", "customers", "scored", "score")  # fmt: skip
_PRICE_CUES = ("price", "prices", "priced", "pricing", "cost", "costs", "range", "pounds",
               "menu", "spend")  # fmt: skip

LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    # E2E
    "area": {
        "riverside": ("riverside", "river", "waterfront", "riverfront"),
        "city centre": ("city centre", "city center", "centre", "center", "downtown",
                        "centre of the city", "centre of town", "city"),
    },
    "eatType": {
        "coffee shop": ("coffee shop", "coffee", "cafe", "coffeehouse", "coffee house"),
        "pub": ("pub", "bar", "tavern"),
        "restaurant": ("restaurant", "eatery", "diner", "bistro", "place to eat"),
    },
    "food": {
        "Chinese": ("chinese",), "English": ("english", "british"), "French": ("french",),
        "Indian": ("indian",), "Italian": ("italian", "pasta", "pizza"),
        "Japanese": ("japanese", "sushi"), "Fast food": ("fast food", "burgers", "burger"),
    },
    "priceRange": {
        "cheap": ("cheap", "inexpensive", "affordable", "low price", "low priced", "low cost",
                  "low prices", "budget", "cheaply", "low pricing", "low range"),
        "moderate": ("moderate", "moderately", "mid range", "average price", "average priced",
                     "reasonably priced", "reasonable", "mid price", "medium price",
                     "medium priced", "fair price", "fairly priced", "average prices"),
        "high": ("expensive", "high price", "high priced", "high prices", "pricey", "pricy",
                 "high end", "upscale", "costly", "high cost", "high range", "high pricing"),
        "less than £20": ("20", "twenty", "cheap", "low price", "low priced", "inexpensive",
                          "affordable", "low cost"),
        "£20-25": ("20 25", "25", "twenty five"),
        "more than £30": ("30", "thirty", "expensive", "high price", "high priced", "pricey"),
    },
    "customer rating": {
        "low": ("low", "poor", "poorly", "badly", "bad", "lowly"),
        "average": ("average", "mediocre", "ok", "okay", "decent", "moderate", "middling"),
        "high": ("high", "highly", "excellent", "great", "top", "good", "well"),
        "1 out of 5": ("1 out of 5", "1 star", "one star", "1 5", "one out of five", "one stars",
                       "1 stars", "rating of 1", "rated 1", "rating of one", "rated one"),
        "3 out of 5": ("3 out of 5", "3 star", "three star", "3 5", "three out of five",
                       "3 stars", "three stars", "rating of 3", "rated 3", "rating of three"),
        "5 out of 5": ("5 out of 5", "5 star", "five star", "5 5", "five out of five",
                       "5 stars", "five stars", "rating of 5", "rated 5", "rating of five"),
    },
    # ViGGO
    "esrb": {
        "E (for Everyone)": ("everyone", "rated e", "e rating", "e rated", "e for everyone",
                             "all ages", "any age", "every age", "e rated"),
        "E 10+ (for Everyone 10 and Older)": ("e 10+", "e10+", "everyone 10", "10 and older",
                                              "10 and up", "ages 10", "10+", "over 10",
                                              "older than 10", "10 years"),
        "T (for Teen)": ("teen", "teens", "teenager", "teenagers", "rated t", "t rating",
                         "t rated", "t for teen", "13+", "ages 13", "13 and"),
        "M (for Mature)": ("mature", "rated m", "m rating", "m rated", "m for mature", "adults",
                           "adult", "17+", "17 and", "ages 17"),
    },
    "platforms": {
        "PlayStation": ("playstation", "ps1", "ps2", "ps3", "ps4", "ps5", "psp", "ps vita",
                        "ps"),
        "Xbox": ("xbox",),
        "PC": ("pc", "pcs", "computer", "computers", "windows"),
        "Nintendo": ("nintendo", "wii", "gamecube", "game cube", "3ds", "ds", "switch", "n64",
                     "snes", "game boy", "gameboy", "nes"),
        "Nintendo Switch": ("switch", "nintendo switch"),
    },
    "player_perspective": {
        "first person": ("first person", "1st person", "fps", "first person shooter",
                         "first and third", "first or third"),
        "third person": ("third person", "3rd person", "over the shoulder", "first and third",
                         "first or third"),
        "bird view": ("bird view", "birds eye", "bird eye", "birdseye", "top down", "overhead",
                      "isometric", "aerial", "bird s eye", "birds eye view", "from above"),
        "side view": ("side view", "side scrolling", "side scroller", "sidescroller",
                      "side scrollers", "2d", "side on", "sidescrolling", "side perspective"),
    },
    "rating": {
        "excellent": ("excellent", "amazing", "fantastic", "outstanding", "incredible", "superb",
                      "brilliant", "phenomenal", "masterpiece", "one of the best", "love",
                      "loved", "awesome", "favorite", "favourite", "exceptional", "perfect",
                      "terrific", "wonderful", "great", "best", "stellar", "blown away",
                      "highly", "enjoy", "enjoyed", "really good", "top"),
        "good": ("good", "great", "decent", "solid", "enjoyable", "enjoy", "enjoyed", "liked",
                 "like", "fun", "nice", "fine", "pleasant", "not bad", "well", "positive",
                 "positively", "entertaining"),
        "average": ("average", "mediocre", "so so", "okay", "ok", "alright", "all right",
                    "meh", "middling", "nothing special", "not great", "not bad", "fond",
                    "strong feelings", "mixed", "not the best", "unremarkable", "indifferent",
                    "passable", "fair", "not that good", "not very good", "moderate",
                    "neither", "not amazing", "lukewarm", "nothing to write home about",
                    "not terrible", "could have been better", "ordinary"),
        "poor": ("poor", "poorly", "bad", "terrible", "awful", "horrible", "disappointing",
                 "disappointed", "boring", "hate", "hated", "dislike", "disliked", "not like",
                 "not enjoy", "not good", "not fun", "waste", "worst", "lousy", "not much fun",
                 "not very good", "not really like", "not a fan", "not care", "frustrating",
                 "dull", "not impressed", "unimpressed", "negative", "not enjoyable", "pass on",
                 "not recommend", "not worth", "garbage", "trash", "not think much",
                 "not that great", "not that good", "low", "subpar", "sub par", "not fond"),
    },
    "genres": {
        "action-adventure": ("action adventure", "action", "adventure"),
        "shooter": ("shooter", "shooters", "shooting", "shoot", "fps", "gun", "guns"),
        "driving/racing": ("driving", "racing", "race", "races", "racer", "drive", "cars"),
        "sport": ("sport", "sports", "football", "soccer", "basketball", "hockey", "golf",
                  "baseball", "tennis", "wrestling", "skateboarding", "snowboarding", "fifa",
                  "nba", "nfl", "skating", "boxing", "athletic"),
        "role-playing": ("role playing", "rpg", "rpgs", "role play", "roleplaying", "mmorpg"),
        "simulation": ("simulation", "simulator", "simulators", "sim", "sims", "simulations"),
        "strategy": ("strategy", "strategic", "tactical", "tactics", "rts"),
        "real-time strategy": ("real time strategy", "rts", "strategy", "real time"),
        "turn-based strategy": ("turn based strategy", "turn based", "strategy", "tbs"),
        "tactical": ("tactical", "tactics", "strategy"),
        "adventure": ("adventure", "adventures"),
        "indie": ("indie", "independent", "indies"),
        "music": ("music", "musical", "rhythm", "song", "songs"),
        "platformer": ("platformer", "platformers", "platforming", "platform"),
        "puzzle": ("puzzle", "puzzles", "puzzler"),
        "MMORPG": ("mmorpg", "mmo", "massively multiplayer", "mmorpgs", "mmos"),
        "action": ("action",),
        "vehicular combat": ("vehicular combat", "vehicle combat", "car combat", "vehicular",
                             "combat", "vehicle"),
        "hack-and-slash": ("hack and slash", "hack n slash", "hack n  slash", "slasher"),
        "point-and-click": ("point and click", "point n click"),
        "fighting": ("fighting", "fighter", "brawler", "fighters"),
        "text adventure": ("text adventure", "text based"),
        "trivia/board game": ("trivia", "board", "quiz"),
        "pinball": ("pinball",),
    },
}  # fmt: skip
# slots whose wording is distinctive enough to call a mention of an absent slot a hallucination
HALLUCINATION_SLOTS = ("area", "familyFriendly", "priceRange", "customer rating", "food",
                       "esrb", "platforms", "player_perspective", "available_on_steam",
                       "has_linux_release", "has_mac_release")  # fmt: skip
# phrases that need a cue word nearby (a rating word near "rated", a price word near "price")
CUED = {"customer rating": _RATING_CUES}
# a price word beside a rating cue (and no price cue) is the rating's ("a moderate rating")
ANTI_CUED = {"priceRange": (_RATING_CUES, _PRICE_CUES)}
# E2E's numeric and verbal values that writers use for each other
EQUIVALENT = {
    ("customer rating", "5 out of 5"): "high", ("customer rating", "high"): "5 out of 5",
    ("customer rating", "1 out of 5"): "low", ("customer rating", "low"): "1 out of 5",
    ("customer rating", "3 out of 5"): "average", ("customer rating", "average"): "3 out of 5",
    ("priceRange", "less than £20"): "cheap", ("priceRange", "cheap"): "less than £20",
    ("priceRange", "£20-25"): "moderate", ("priceRange", "moderate"): "£20-25",
    ("priceRange", "more than £30"): "high", ("priceRange", "high"): "more than £30",
}  # fmt: skip
E2E_SLOTS = frozenset({"eatType", "food", "priceRange", "customer rating", "area",
                       "familyFriendly", "near"})  # fmt: skip
SHARED_WORDS = frozenset(p for v in LEXICON["priceRange"].values() for p in v) & frozenset(
    p for v in LEXICON["customer rating"].values() for p in v
)
REPEAT_SLOTS = frozenset({"area", "priceRange", "customer rating", "esrb",
                          "player_perspective", "familyFriendly"})  # fmt: skip
NAME_SLOTS = ("name", "near", "developer", "specifier")
LIST_SLOTS = ("genres", "platforms", "player_perspective")
CUE_WINDOW = 4
