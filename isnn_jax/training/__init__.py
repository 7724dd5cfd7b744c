"""Training machinery: the config, the loop, checkpoints, preemption, metric writers, the device
mesh and multi-process start-up.

`loop.train_and_evaluate` is the one entry point; `setup` reads a run out of its config and
checks it before anything is written. May import `evaluation`, `protection`, `models`, `data`
and `base`; never the buyer's runtime, the seller's tools or the command line.
"""
