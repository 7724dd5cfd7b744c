"""The public surface for buyers and sellers.

    from isnn_jax import api
    lic = api.Licence.load("buyer.licence.json")      # or api.Licence.issue(copyright=...)
    model = api.load_protected("workdir")              # restores the newest checkpoint
    logits = model.logits(images, licence=lic)         # images: float32 NHWC in [0, 1]
    logits = model.logits(images)                      # no licence: what a thief gets
    x_legal = api.apply_licence(lic, images)           # the keyed transform alone
    model = api.load_model("model.isnn")               # a workdir or an export file

    config = api.load_config("fashion_mnist")          # a packaged name or a config file
    lic = api.Licence.issue("(c) ...", api.transform_spec(config))   # the config's transform
    report = api.train_and_evaluate(config, "workdir", lic)   # train (or resume), evaluate
"""

from isnn_jax.cli.configs import load_config
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.runtime.export import load_export, load_model
from isnn_jax.runtime.model import ProtectedModel, apply_licence, check_image_batch, load_protected
from isnn_jax.training.loop import train_and_evaluate
from isnn_jax.training.setup import transform_spec

__all__ = ["Licence", "LicenceError", "TransformSpec", "ProtectedModel", "load_protected",
           "load_export", "load_model", "apply_licence", "check_image_batch", "load_config",
           "train_and_evaluate", "transform_spec"]
