"""Property-based fuzzing of the parsers: licence files and image arrays fail only with the
documented errors (LicenceError, ValueError), never with a crash of another kind."""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from isnn_jax.api import check_image_batch
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec

VALID = Licence(bytes(range(32)), "(c) Seller; Buyer; fuzz", TransformSpec())
RECORD = json.loads(VALID.to_json())
# Examples per property come from the loaded profile (conftest.py): 300 by default, fewer in CI.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)


def parse_or_documented_error(text: str) -> Licence | None:
    try:
        return Licence.from_json(text, source="fuzzed licence")
    except LicenceError as err:
        assert str(err).startswith("fuzzed licence"), err  # every problem names the file
        return None


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_is_a_licence_error(text):
    parse_or_documented_error(text)


@FUZZ
@given(st.sampled_from(sorted(RECORD) + ["extra"]), json_values | st.just("__delete__"))
def test_mutated_licence_fields_are_rejected_or_consistent(field, value):
    record = dict(RECORD)
    if value == "__delete__":
        record.pop(field, None)
    else:
        record[field] = value
    licence = parse_or_documented_error(json.dumps(record))
    if licence is not None:  # accepted only if it is still an intact licence
        assert licence.fingerprint() == record["fingerprint"]
        assert Licence.from_json(licence.to_json()) == licence


@FUZZ
@given(st.sampled_from(sorted(RECORD["transform"]) + ["extra"]), json_values)
def test_mutated_transform_parameters_are_rejected_or_valid(field, value):
    record = json.loads(VALID.to_json())
    record["transform"][field] = value
    record.pop("fingerprint")  # reach the parameter checks behind the integrity check
    licence = parse_or_documented_error(json.dumps(record))
    if licence is not None:
        assert TransformSpec.from_dict(licence.transform.to_dict()) == licence.transform


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_licence_file_bytes_are_a_licence_error(tmp_path, data):
    path = tmp_path / "fuzzed.licence.json"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    with pytest.raises(LicenceError):
        Licence.load(path)


image_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int32, np.bool_,
                           np.complex64, np.dtype("U2")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9))


@FUZZ
@given(image_arrays)
def test_image_batches_are_valid_float32_or_a_value_error(array):
    try:
        checked = check_image_batch(array, (8, 8, 1))
    except ValueError as err:
        assert str(err)
        return
    assert checked.dtype == np.float32 and checked.shape[1:] == (8, 8, 1)
    assert np.isfinite(checked).all() and checked.min(initial=0) >= 0 and checked.max(initial=0) <= 1


def _png_bytes(shape, seed=0) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png_bytes((12, 10, 3))


def read_file_or_documented_error(path, reader, shape):
    from isnn_jax.runtime.images import ImageError

    try:
        array = reader(path, shape)
    except ImageError as err:
        assert str(path) in str(err), err  # every problem names the file
        return None
    assert array.dtype == np.float32 and np.isfinite(array).all()
    assert array.min(initial=0) >= 0 and array.max(initial=0) <= 1
    return array


@FUZZ
@given(st.binary(max_size=600) | st.builds(lambda cut: PNG[:cut], st.integers(0, len(PNG))))
def test_arbitrary_or_truncated_image_file_bytes(tmp_path, data):
    from isnn_jax.runtime.images import read_image

    path = tmp_path / "fuzzed.png"
    path.write_bytes(data)
    array = read_file_or_documented_error(path, read_image, (8, 8, 1))
    assert array is None or array.shape == (8, 8, 1)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(1, 255)), min_size=1,
                max_size=8))
def test_png_with_flipped_bytes(tmp_path, flips):
    from isnn_jax.runtime.images import read_image

    data = bytearray(PNG)
    for position, mask in flips:
        data[position] ^= mask
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    array = read_file_or_documented_error(path, read_image, (8, 8, 3))
    assert array is None or array.shape == (8, 8, 3)


@FUZZ
@given(image_arrays | st.binary(max_size=300))
def test_arbitrary_npy_files(tmp_path, value):
    from isnn_jax.runtime.images import read_array

    path = tmp_path / "fuzzed.npy"
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        np.save(path, value)
    array = read_file_or_documented_error(path, read_array, (8, 8, 1))
    assert array is None or array.shape[1:] == (8, 8, 1)
