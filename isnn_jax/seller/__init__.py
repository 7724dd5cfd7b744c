"""The seller's tools: the licence registry, protecting a model per buyer, ownership
verification, leak tracing (local and black-box), and simulated leaks to test them.

May import `runtime`, `training`, `evaluation`, `protection`, `models`, `data` and `base`; never
`attack` (the two tool packages are independent) or the command line.
"""
