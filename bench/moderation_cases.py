"""The prompt filter's table: evasion forms that must match a default entry, and ordinary prompts that must not.

Shared by `tests/moderation/test_filter_table.py` (0 misses, 0 false positives) and `python -m bench moderation`
(the same counts, and the time per prompt). Every example of issue 14 is here.
"""

from __future__ import annotations

from bench.moderation_prompts import ORDINARY_PROMPTS

# (text, the default entry it must match)
EVASIONS: list[tuple[str, str]] = [
    # Word forms: inflections and derivations (rule 1)
    ("raped", "rape"), ("raping", "rape"), ("rapes", "rape"), ("a rapey scene", "rape"), ("sexy", "sexy"),
    ("sexier", "sexy"), ("nazism", "nazi"), ("nazis marching", "nazi"), ("suicidal", "suicide"),
    ("beheaded", "behead"), ("beheading", "behead"), ("penises", "penis"), ("boobs", "boob"), ("boobies", "boob"),
    ("nudes", "nude"), ("nudist beach", "nude"), ("gory", "gory"), ("gored", "gore"), ("pornographic", "pornographic"),
    ("decapitated", "decapitate"), ("mutilated", "mutilate"), ("dismembered", "dismember"),
    ("disemboweled", "disembowel"), ("orgasms", "orgasm"), ("nipples", "nipple"), ("sexually", "sexual"),
    ("swastikas", "swastika"), ("self harming", "self harm"), ("selfharming", "self harm"), ("suicides", "suicide"),
    # Glued compounds and digits (rule 3)
    ("nudewoman", "nude"), ("hotsex", "sex"), ("nude8k", "nude"), ("porn2", "porn"), ("hotnudewoman", "nude"),
    ("sexdoll", "sex"), ("pornvideo", "porn"), ("goreart", "gore"), ("bloodgore", "gore"), ("nakedgirl", "naked"),
    ("nazisoldier", "nazi"), ("nude4you", "nude"), ("hentaigirl", "hentai"), ("porn2024", "porn"),
    ("sexsexsex", "sex"), ("redsuicide", "suicide"),
    # Repeated letters
    ("nuuude", "nude"), ("nuuuuuudeee", "nude"), ("pooorn", "porn"), ("seeeexxx", "sex"), ("gooore", "gore"),
    ("raaaape", "rape"), ("naaazi", "nazi"), ("boooobs", "boob"), ("nakeeed", "naked"),
    # One space bridged (rule 4)
    ("nud e", "nude"), ("a nud e statue", "nude"), ("p orn", "porn"), ("rap e", "rape"), ("se x", "sex"),
    ("swas tika", "swastika"), ("hent ai", "hentai"), ("nake d", "naked"),
    # Slang and multi-character leet
    ("pr0n", "porn"), ("seggs", "sex"), ("s3xy", "sexy"), ("|\\|ude", "nude"), ("/\\/ude", "nude"),
    ("|\\|aked", "naked"), ("secks", "sex"), ("noods", "nude"), ("nekkid", "naked"), ("unalive", "suicide"),
    ("sewerslide", "suicide"), ("|-|entai", "hentai"), ("|_|nderage", "underage"), ("|>orn", None),
    ("nu|)e", "nude"), ("()rgasm", "orgasm"), ("seggsy", "sex"), ("s3ggs", "sex"), ("pr0nz", "porn"),
    # Look-alike letters outside the first table: small capitals, Lisu, Cherokee, Coptic, syllabics, hooks/strokes
    ("ɴᴜᴅᴇ", "nude"), ("ᴘᴏʀɴ", "porn"), ("ꓠꓴꓓꓰ", "nude"), ("ᏚᎬX", "sex"), ("ⲛude", "nude"), ("ᑎᑌᗪᗴ", "nude"),
    ("ɲuɗe", "nude"), ("ƞude", "nude"), ("ꞑude", "nude"), ("ṉụḍẹ", "nude"), ("ŋude", None), ("ƥorn", "porn"),
    ("ƨex", None), ("ȿex", "sex"), ("ɠore", "gore"), ("ɍape", "rape"), ("ƶ", None), ("🅝🅤🅓🅔", "nude"),
    ("🅽🆄🅳🅴", "nude"), ("🇳🇺🇩🇪", "nude"), ("🄽🅄🄳🄴", "nude"), ("ⓝⓤⓓⓔ", "nude"), ("𝔫𝔲𝔡𝔢", "nude"),
    ("𝖓𝖚𝖉𝖊", "nude"), ("𝚗𝚞𝚍𝚎", "nude"), ("ｐｏｒｎ", "porn"), ("ɢᴏʀᴇ", "gore"), ("ꜱᴇx", "sex"),
    ("ℕ𝕦𝕕𝕖", "nude"), ("ǹúđè", "nude"), ("ñüdë", "nude"), ("ⓢⓔⓧ", "sex"),
    # Invisible letters and punctuation-like modifier letters
    ("n\u3164u\u3164d\u3164e", "nude"), ("n\uffa0ude", "nude"), ("nu\u115fde", "nude"), ("nud\u1160e", "nude"),
    ("n\u02bcu\u02bcd\u02bce", "nude"), ("n\u02c8u\u02c8d\u02c8e", "nude"), ("n\ua78cu\ua78cd\ua78ce", "nude"),
    ("n\u0640u\u0640d\u0640e", "nude"), ("n\u30fcu\u30fcd\u30fce", "nude"), ("n\u01c0u\u01c0d\u01c0e", "nude"),
    ("p\u200bo\u200br\u200bn", "porn"), ("s\u2060e\u2060x", "sex"), ("g\u180eore", "gore"),
    ("n\u2800ude", "nude"), ("r\u00adape", "rape"),
    # Spelled out (rule 5)
    ("n u d e", "nude"), ("N.U.D.E", "nude"), ("p o r n", "porn"), ("s e x", "sex"), ("r a p e", "rape"),
    ("g o r e", "gore"), ("n a z i", "nazi"), ("s-e-x-y", "sexy"), ("h e n t a i", "hentai"),
    ("a n u d e woman", "nude"), ("nu d e", "nude"), ("n u de", "nude"), ("e s s e x s e x", "sex"),
    ("s u i c i d e", "suicide"), ("p.o.r.n.o", "porno"), ("w h i t e p o w e r", "white power"),
    # Phrases
    ("white power", "white power"), ("WHITE-POWER", "white power"), ("whitepower", "white power"),
    ("white powers", "white power"), ("self-harm", "self harm"), ("s e l f h a r m", "self harm"),
    ("self  harm", "self harm"),
    # Combinations
    ("N\u200b.U.D.Ε", "nude"), ("Ｐ０ＲＮ", "porn"), ("p0rn0", "porno"), ("5ex", "sex"), ("s3x", "sex"),
    ("$ex!", "sex"), ("r4p3d", "rape"), ("n1pple", "nipple"), ("g0ry", "gory"), ("nuuud3", "nude"),
    ("pr0nz 4k", "porn"), ("h0tsex", "sex"), ("nüde8k", "nude"), ("ɴᴜᴜᴅᴇ", "nude"), ("n\u3164u\u3164uude", "nude"),
    ("sh0ta", "shota"), ("l0li", "loli"), ("jailb8", None), ("k k k", "kkk"), ("kkkk", "kkk"),
    ("underage girl", "underage"), ("lolicon", "lolicon"), ("j@ilbait", "jailbait"), ("h3nt41", "hentai"),
    ("0nlyfans", "onlyfans"), ("onlyphans", "onlyfans"), ("bdsm", "bdsm"), ("3r0tic", "erotic"),
    ("v4gina", "vagina"), ("g3nitals", "genitals"), ("nsfw", "nsfw"), ("n.s.f.w", "nsfw"),
    ("swa5tika", "swastika"), ("sw@stika", "swastika"), ("self h4rm", "self harm"), ("5u1c1de", "suicide"),
    ("n4z1", "nazi"), ("rap1st", "rapist"), ("mut1lated", "mutilate"), ("d3capitated", "decapitate"),
    ("b3headed", "behead"), ("NUDEWOMAN", "nude"), ("Nude-Woman", "nude"), ("nude_woman", "nude"),
    ("nude,woman", "nude"), ("(nude)", "nude"), ("[porn]", "porn"), ("#nsfw", "nsfw"), ("@porn", "porn"),
    ("porn!!!", "porn"), ("nakedness", "naked"), ("eroticism", "erotic"), ("orgasmic", "orgasm"),
]
EVASIONS = [(text, entry) for text, entry in EVASIONS if entry is not None]
"""Rows whose entry is None above are documented non-matches (a letter no table folds to a listed word's letter)."""

ISSUE_ORDINARY = [
    "a white power bank", "white power lines", "oilseed rape field", "rapeseed oil", "a car with suicide doors",
    "suicide prevention poster", "portrait of Gore Vidal", "a six-gore skirt", "G R A P E", "T H E R A P I S T",
    "S K Y S C R A P E R", "C A T E G O R Y",
]
"""The false positives issue 14 names (Swedish `sex` and Slovene `gore` are the documented exception: README)."""

SPELLED_INNOCENT = [
    " ".join(word.upper()) for word in (
        "grape", "therapist", "skyscraper", "category", "drape", "scrape", "grapes", "essex", "sussex", "wessex",
        "sextant", "sextet", "allegory", "gregory", "goretex", "nudibranch", "denuded", "scrapbook", "therapy",
        "parapet", "trapeze", "sexton", "unisex", "penistone", "nazca", "penguin", "peninsula", "pensive",
        "grapefruit", "draperies", "rapeseed", "lolipop", "shotgun", "gorilla", "boomerang", "naked mole rat",
    )
]
"""Innocent words spelled out letter by letter (the spelled-out pass fires only on a listed word)."""

ORDINARY = [
    *ORDINARY_PROMPTS, *ISSUE_ORDINARY, *SPELLED_INNOCENT,
    "a peninsula at dawn", "sussex spaniel puppy", "the essex coast", "a sextant on a map", "a unisex jacket",
    "a therapeutic garden", "grapefruit on a plate", "a drapery study", "an allegory of spring",
    "saint gregory icon", "a category 5 hurricane", "a scrapyard robot", "a penguin in the snow",
    "the pen is mightier than the sword", "class act", "a bass guitar", "a pass through the mountains",
    "rapids on a river", "a trapeze artist", "a rapier duel", "nudibranch macro",
    "a nazca line", "a lolly in a jar", "a shotgun wedding", "a boob tube top",
]
