"""Built-in word lists for templated probes (the ``words``, ``name``, ``cjk`` and ``emoji``
generators in `aione_probe.suites`).

Small on purpose, but real words: canaries built from them read like natural text, so a
gateway cannot tell a probe from ordinary traffic by its vocabulary. Changing any list
changes what a seed renders: bump `aione_probe.suites.GENERATOR_VERSION` when you do.
"""

from __future__ import annotations


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NOUNS: tuple[str, ...] = _split(
    """
    apple anchor arrow bakery balloon banana basket battery beach bell bicycle blanket
    boat bottle bridge brush bucket butter button cabin cactus camera candle canyon
    carpet castle ceiling chair chalk cheese cherry chimney circle clock cloud coast
    coffee compass copper cotton court crayon crown cup curtain desert diamond dinner
    doctor dolphin door dragon drawer drum eagle engine envelope feather fence field
    finger flag flame flute forest fork fountain frog garden garlic giraffe glacier
    glass glove goat guitar hammer harbor harvest helmet hill honey horse island jacket
    jungle kettle kitchen kite ladder lake lantern leaf lemon letter library lighthouse
    lion machine magnet map market meadow mirror monkey moon mountain museum needle
    nest ocean office orange orchard oven owl paint palace paper parrot pencil pepper
    piano pillow planet plate pocket pond potato puzzle pyramid quilt rabbit radio
    rainbow river road robot rocket roof rope saddle sail salt sandwich scarf school
    scissors shadow shell shield ship shoe shovel silver skate sky snail snow soap
    sock spoon spring square stairs star station statue stone storm street sugar
    suitcase sun table teacher teapot telescope tent thunder ticket tiger tomato tooth
    tower tractor train tree trumpet tunnel turtle umbrella valley vase village violin
    wagon wallet water whale wheel window wizard wolf
    """
)

ADJECTIVES: tuple[str, ...] = _split(
    """
    ancient angry bitter bold brave breezy bright broad bumpy busy calm careful cheap
    clean clever cloudy cold cozy crisp curious dark deep dry dusty eager early easy
    empty faint fancy fast fierce flat fresh friendly fuzzy gentle giant glad golden
    grand great green happy heavy hollow honest huge humble icy jolly kind large late
    lazy light little lively lonely long loud lucky merry mighty modern narrow neat
    new noisy odd old pale plain polite proud quick quiet rapid rare rich rough round
    rusty sad salty shallow sharp shiny short silent simple slow small smooth soft
    solid sour spicy steep sticky strange strong sunny sweet swift tall tame tender
    thick thin tidy tiny warm wet wide wild wise young
    """
)

COLORS: tuple[str, ...] = _split(
    """
    amber azure beige black blue bronze brown coral crimson cyan gold gray green indigo
    ivory lavender lime magenta maroon navy olive orange peach pink plum purple red
    rose ruby scarlet silver tan teal turquoise violet white yellow
    """
)

FIRST_NAMES: tuple[str, ...] = _split(
    """
    Aaron Abigail Adam Adrian Aisha Alan Alice Amara Amelia Andrew Anna Arthur Ava
    Benjamin Bianca Caleb Camille Carlos Chloe Clara Daniel David Diana Dmitri Elena
    Eli Eliza Emil Emma Ethan Eva Felix Fiona Gabriel Grace Hannah Harper Hugo Ian
    Ingrid Isaac Isla Ivan Jack Jade James Javier Julia Kai Kenji Laura Leo Lily Lucas
    Luna Maya Mia Miguel Mila Nadia Naomi Nathan Nina Noah Nora Oliver Olivia Omar
    Oscar Paul Priya Quinn Rafael Rosa Ruby Samuel Sara Sofia Stella Theo Thomas Tobias
    Uma Victor Vera Violet Wei William Xavier Yara Yusuf Zara Zoe Leila Marco Hiro Ana
    Hector Iris Jonas
    """
)

SURNAMES: tuple[str, ...] = _split(
    """
    Abbott Alvarez Bauer Bennett Brooks Carter Chen Costa Dalton Diaz Evans Fischer
    Fletcher Garcia Grant Hayes Hughes Ito Jensen Kaur Keller Kim Larsen Lopez Meyer
    Moreau Murphy Nakamura Novak Olsen Patel Perez Quinn Reyes Rossi Santos Schmidt
    Silva Sato Singh Stone Sullivan Tanaka Torres Turner Walsh Weber Wong Young Zhang
    """
)

# Common simplified Chinese characters (high-frequency, each a standalone BMP code point).
CJK_COMMON: str = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家"
    "学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经"
    "头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者"
    "向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气"
    "信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活"
    "难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清"
    "物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功"
)

# Single-code-point emoji (no ZWJ sequences or variation selectors), so `count` is exact.
EMOJI: tuple[str, ...] = tuple(
    "😀😂😊😍😎😢😡😴🤔🤖👍👀👋🙏💡💤💧🔥🌟🌈🌙🌵🌻🍀🍁🍄🍇🍉🍋🍌🍎🍒🍓🍕🍩🍪🎂🎈🎉🎵🎸🏀"
    "🏆🏠🐍🐘🐙🐝🐢🐧🐬🐳🐶🐱🦁🦊🦋🚀🚲⛵🔑🔔📚📦🧩"
)

WORDLISTS: dict[str, tuple[str, ...]] = {
    "nouns": NOUNS,
    "adjectives": ADJECTIVES,
    "colors": COLORS,
    "first_names": FIRST_NAMES,
    "surnames": SURNAMES,
}
"""Lists the ``words`` generator can draw from, by the name used in suite files."""
