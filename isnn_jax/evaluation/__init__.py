"""Evaluation and statistics: how well a model resists, measured on data, and how sure we are.

`counting` measures accuracy and output ranks under many keys per compiled call, `screening`
builds the protection report (every licence screened, the best confirmed), `report` words it,
`stats` holds the exact tests verification and tracing rest on. May import `protection`,
`models`, `data` and `base`; never training, the tools or the command line.
"""
