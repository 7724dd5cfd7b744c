"""Near keys: licences that differ from the true one by one bit or one character.

Used in training (the near-key illegal term) and in evaluation (every edit class by name; the
keys a run trained on are reported apart from the held-out ones it never saw).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from isnn_jax.protection.licence import Licence

# Latin letters and their Cyrillic/Greek look-alikes (visually identical in most fonts).
LOOKALIKES = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "o": "\u043e", "p": "\u0440",
    "x": "\u0445", "y": "\u0443", "A": "\u0391", "B": "\u0392", "E": "\u0395", "H": "\u0397",
    "K": "\u039a", "M": "\u039c", "O": "\u039f", "P": "\u03a1", "T": "\u03a4", "X": "\u03a7",
    "1": "l", "0": "O", "-": "\u2010", " ": "\u00a0",
}
EDIT_CLASSES = ("substitution", "insertion", "deletion", "case", "whitespace", "lookalike",
                "transposition")


def copyright_edits(text: str) -> dict[str, list[str]]:
    """Every one-character edit of `text`, grouped by edit class; the original never appears."""
    edits: dict[str, list[str]] = {name: [] for name in EDIT_CLASSES}
    for i, char in enumerate(text):
        replacement = "b" if char == "a" else "a"
        edits["substitution"].append(text[:i] + replacement + text[i + 1:])
        edits["deletion"].append(text[:i] + text[i + 1:])
        if char.lower() != char.upper():
            edits["case"].append(text[:i] + char.swapcase() + text[i + 1:])
        if char in LOOKALIKES:
            edits["lookalike"].append(text[:i] + LOOKALIKES[char] + text[i + 1:])
        if char.isspace():
            edits["whitespace"].append(text[:i] + "  " + text[i + 1:])
            edits["whitespace"].append(text[:i] + "\t" + text[i + 1:])
            edits["whitespace"].append(text[:i] + text[i + 1:])
        if i + 1 < len(text) and text[i + 1] != char:
            edits["transposition"].append(text[:i] + text[i + 1] + char + text[i + 2:])
    for i in range(len(text) + 1):
        edits["insertion"].append(text[:i] + "x" + text[i:])
    edits["whitespace"] += [" " + text, text + " ", text + "\n"]
    return {name: sorted(set(items) - {text}) for name, items in edits.items()}


def bit_flips(secret: bytes) -> list[bytes]:
    """The secret with each single bit flipped in turn (8 * len(secret) secrets)."""
    flipped = []
    for bit in range(len(secret) * 8):
        data = bytearray(secret)
        data[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(data))
    return flipped


def near_licences(licence: Licence, per_class: int | None, seed: int) -> dict[str, list[Licence]]:
    """Near licences by class: each copyright edit class and 'secret_bit_flip'.

    `per_class` caps each class with a seeded random sample (None keeps every edit).
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Licence]] = {}
    classes = copyright_edits(licence.copyright)
    classes_secret = {"secret_bit_flip": bit_flips(licence.secret)}
    for name, texts in classes.items():
        chosen = _sample(texts, per_class, rng)
        groups[name] = [licence.with_copyright(text) for text in chosen]
    for name, secrets in classes_secret.items():
        chosen = _sample(secrets, per_class, rng)
        groups[name] = [licence.with_secret(secret) for secret in chosen]
    return {name: group for name, group in groups.items() if group}


def training_near_licences(licence: Licence, count: int, seed: int) -> list[Licence]:
    """A seeded mix of `count` near licences over all classes, for the near-key loss term."""
    groups = near_licences(licence, None, seed)
    pool = [lic for group in groups.values() for lic in group]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))[:count]
    return [pool[i] for i in order]


def _sample(items: list, cap: int | None, rng: np.random.Generator) -> list:
    if cap is None or len(items) <= cap:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), cap, replace=False))]


def trained_near_from_config(licence: Licence, config: Mapping[str, Any]) -> list[Licence] | None:
    """The near licences a run with this stored config trained on (None: the config cannot say).

    `config` is the plain dict a workdir's metadata keeps under "config"; evaluation uses it to
    report held-out near keys apart from trained ones."""
    objective = config.get("objective") if isinstance(config, Mapping) else None
    if not isinstance(objective, Mapping) or "near_keys" not in objective or "seed" not in config:
        return None
    if not config.get("protect", True) or float(objective.get("w_near", 1.0)) <= 0:
        return []
    return training_near_licences(licence, int(objective["near_keys"]), int(config["seed"]))


def key_id(licence: Licence) -> bytes:
    """What identifies a near licence's transform: the 8 key bytes every evaluation uses."""
    return licence.key_bytes()[:8]


def trained_flags(licences: Sequence[Licence], trained: Sequence[Licence] | None) -> np.ndarray:
    """Per licence: True where its key is one of the `trained` near keys (all False when None)."""
    ids = {key_id(lic) for lic in trained or ()}
    return np.array([key_id(lic) in ids for lic in licences], dtype=bool)
