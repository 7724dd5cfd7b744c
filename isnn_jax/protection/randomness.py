"""Every random stream of the protection in one place: which `fold_in` index draws what.

Keys are split by `jax.random.fold_in(key, STREAM)`, so each purpose gets an independent
stream and adding a purpose never shifts another's draws. The values are part of the format:
changing one changes every licence's transform or every step's views (and resumed runs).
"""

# Streams of a licence key: the keyed transform.
PATTERN = 0  # the additive pattern
SHUFFLE = 1  # the block permutation
MIX = 2  # the orthogonal mixing's permutations and signs

# Streams of a step's rng (fold_in(seed_rng, step)): the illegal views of that step.
WRONG_KEYS = 1  # random wrong keys, one per example and view
NEAR_KEYS = 2  # which trained near key each example gets
ESTIMATE_EXAMPLES = 3  # example keys of the eavesdropper estimate (hardening)
ESTIMATE_SIZE = 4  # how many observed inputs the estimate averages this step
DROPOUT = 5  # a stateful model's dropout in its training-mode pass (per device under pmap)
PARTIAL_KEYS = 6  # the other key and the legal fraction of each example's partial-key view

# Streams of one example's key (under ESTIMATE_EXAMPLES): its uniform draw into the sets A, B.
ESTIMATE_MEMBERSHIP = 3

# Streams of the initialisation rng.
INIT_UNLOCK = 1  # the unlock hardening's starting perturbations
