"""The command line's shared machinery: every `python -m isnn_jax.X` door is a few lines over it.

`doors` (the parser class and the error-to-exit-code decorator), `logs`, `configs` (`--config`
and its overrides), `training` (the path train and protect share), `models` (the suspect and
verification-set options of verify and trace), `licences` (the licence and registry
subcommands). May import every layer below it; only the doors and `api` import it.
"""
