"""The options verify and trace share: the suspect model (local or a black-box command), the
labelled verification set, and the test's seed and significance level; and trace's own."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from isnn_jax.cli.doors import UsageError
from isnn_jax.data import data_options
from isnn_jax.runtime.black_box import Classifier, command_classifier, model_classifier
from isnn_jax.runtime.export import load_model
from isnn_jax.seller.black_box_trace import (DEFAULT_BETA, DEFAULT_MAX_PER_LICENCE,
                                             DEFAULT_UNLOCKED_ACCURACY, EXPOSED)
from isnn_jax.seller.verify import DEFAULT_ALPHA, load_npz, verification_set


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options verify and trace share: the model, the verification set, the test."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a trained workdir or an export file")
    source.add_argument("--command", help="black-box command: run as CMD IMAGES.npy, prints a "
                                          "JSON list of class indices (e.g. 'python -m "
                                          "isnn_jax.serve model.isnn')")
    parser.add_argument("--dataset", help="verification dataset (default: the model's)")
    parser.add_argument("--split", default="test", help="split of --dataset to draw from "
                                                        "(default: test)")
    parser.add_argument("--num_images", type=int, default=1000,
                        help="verification images drawn from the split (default 1000)")
    parser.add_argument("--data", help="verification set .npz with 'images' and 'labels' instead")
    parser.add_argument("--data_dir", help="TFDS data directory")
    parser.add_argument("--random_licences", type=int, default=100,
                        help="random licences the claimed one is compared with (default 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the image draw and the random licences")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help=f"significance level of the test (default {DEFAULT_ALPHA:g})")
    parser.add_argument("--json", action="store_true", help="print JSON")


def resolve_model(args: argparse.Namespace) -> tuple[Classifier, dict[str, Any], Any]:
    """The classifier, the known metadata and the loaded model (None for a command)."""
    if args.command:
        return command_classifier(args.command), {}, None
    model = load_model(args.model)
    return model_classifier(model), model.meta, model


def resolve_data(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray,
                                                                          str]:
    """The verification set the options name: --data, else --dataset or the model's dataset."""
    if args.data:
        images, labels = load_npz(args.data)
        return images, labels, str(args.data)
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ValueError("the model names no dataset; pass --dataset NAME or --data FILE.npz")
    options: dict[str, Any] = {}
    if dataset == meta.get("dataset"):  # the model's own data, read as its config reads it
        options = data_options(meta.get("config", {}).get("data", {}))
    options["data_dir"] = args.data_dir
    images, labels = verification_set(dataset, split=args.split, num_images=args.num_images,
                                      seed=args.seed, **options)
    return images, labels, f"{dataset} {args.split}"


def check_data_shape(images: np.ndarray, meta: dict[str, Any]) -> None:
    """Verification images must have the shape the model's metadata names (when it names one)."""
    if meta.get("image_shape") and tuple(images.shape[1:]) != tuple(meta["image_shape"]):
        raise ValueError(f"verification images are {images.shape[1:]} but the model takes "
                         f"{tuple(meta['image_shape'])}; pass a matching --dataset or --data")


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """Trace's options besides the shared ones: the registry and the black-box test's."""
    parser.add_argument("--registry", required=True, help="the seller's licence registry")
    parser.add_argument("--expose_legal_inputs", action="store_true",
                        help="required with --command, which sends the service " + EXPOSED)
    parser.add_argument("--max_images_per_licence", type=int, default=DEFAULT_MAX_PER_LICENCE,
                        help="--command only: the most legal inputs of one licence sent "
                             "(default %(default)s); a licence still undecided there is "
                             "reported undecided")
    parser.add_argument("--baseline_images", type=int,
                        help="--command only: images sent first, each under a random "
                             "unregistered licence, for the null accuracy p0; more of them "
                             "lower p0 and so the legal inputs needed (default: every distinct "
                             "image not reserved for the licences)")
    parser.add_argument("--unlocked_accuracy", type=float, default=DEFAULT_UNLOCKED_ACCURACY,
                        help="--command only: p1, the accuracy of a model under the licence it "
                             "answers to, that the sequential test weighs against p0 "
                             "(default %(default)s)")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="--command only: the error bound of clearing a licence under which "
                             "the model is at least p1 right (default %(default)s)")


def check_exposure(args: argparse.Namespace) -> None:
    """A black-box trace runs only when --expose_legal_inputs accepts what it sends."""
    if args.command and not args.expose_legal_inputs:
        raise UsageError(f"--command hands the service legal inputs of every registered licence "
                         f"(up to {args.max_images_per_licence} each, other buyers' included); "
                         "pass --expose_legal_inputs to accept that, or trace a local workdir or "
                         "export with --model")
