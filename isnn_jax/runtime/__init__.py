"""The buyer's runtime: the loaded model, image files, prediction, the serving export and the
black-box protocol.

`model.ProtectedModel` is the one loaded-model type (from a workdir or an export). May import
`training` (checkpoints and metadata, to restore a workdir), `evaluation`, `protection`,
`models`, `data` and `base`; never the seller's tools, the attacks or the command line.
"""
