"""The bottom layer: what every other layer shares and nothing of isnn_jax's own.

`errors` holds the error families the command line maps to exit codes, `files` the one way a
file is written (atomically), `compilation` the XLA options the heavy programs compile with.
`compilation` imports JAX; the others import only the standard library.
"""
