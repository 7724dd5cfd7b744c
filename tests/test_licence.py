import json
import os
import subprocess
import sys

import numpy as np
import pytest

from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.protection.near_keys import bit_flips, copyright_edits
from isnn_jax.protection.transforms import additive_pattern


def pattern(lic: Licence) -> np.ndarray:
    return np.asarray(additive_pattern(lic.key(), (28, 28, 1), lic.transform))


def test_issue_uses_256_bit_secret_and_hides_it():
    lic = Licence.issue("(c) A; B; 1")
    assert len(lic.secret) == 32
    assert lic.secret.hex() not in repr(lic)
    assert Licence.issue("(c) A; B; 1").secret != lic.secret


def test_same_licence_same_pattern_in_another_process(licence, tmp_path):
    path = licence.save(tmp_path / "l.json")
    code = ("import numpy as np, sys; from isnn_jax.protection.licence import Licence;"
            "from isnn_jax.protection.transforms import additive_pattern as p;"
            "l = Licence.load(sys.argv[1]);"
            "np.save(sys.argv[2], np.asarray(p(l.key(), (28, 28, 1), l.transform)))")
    out = tmp_path / "p.npy"
    subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    np.testing.assert_array_equal(np.load(out), pattern(licence))


def test_one_bit_or_one_character_gives_unrelated_pattern(licence):
    base = pattern(licence)
    others = [licence.with_secret(bit_flips(licence.secret)[0]),
              licence.with_secret(bit_flips(licence.secret)[255]),
              licence.with_copyright(licence.copyright + " "),
              licence.with_copyright(licence.copyright.replace("7", "8"))]
    for other in others:
        agreement = (np.sign(pattern(other)) == np.sign(base)).mean()
        # Unrelated Rademacher patterns agree on about half the pixels (784 pixels: +-5 sigma).
        assert 0.41 < agreement < 0.59, agreement


def test_transform_parameters_enter_the_key(licence):
    other = Licence(licence.secret, licence.copyright, TransformSpec(epsilon=0.031))
    assert other.key_bytes() != licence.key_bytes()


def test_save_is_0600_refuses_overwrite_and_round_trips(licence, tmp_path):
    path = licence.save(tmp_path / "buyer.licence.json")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(LicenceError, match="already exists"):
        licence.save(path)
    assert Licence.load(path) == licence


def test_load_refuses_world_readable_file(licence, tmp_path):
    path = licence.save(tmp_path / "l.json")
    os.chmod(path, 0o644)
    with pytest.raises(LicenceError, match="chmod 600"):
        Licence.load(path)


def test_missing_licence_file_error_names_the_path(tmp_path):
    with pytest.raises(LicenceError, match="not found"):
        Licence.load(tmp_path / "nope.json")


def test_tampered_licence_fails_integrity_check(licence, tmp_path):
    record = json.loads(licence.to_json())
    record["copyright"] = record["copyright"].replace("Buyer", "Thief")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(record))
    os.chmod(path, 0o600)
    with pytest.raises(LicenceError, match="integrity"):
        Licence.load(path)


@pytest.mark.parametrize("text,match", [("{", "not valid JSON"), ("[]", "not an isnn-licence"),
                                        ('{"format": "isnn-licence/1"}', "lacks the field")])
def test_malformed_licence_files(text, match):
    with pytest.raises(LicenceError, match=match):
        Licence.from_json(text)


def test_short_secret_rejected():
    with pytest.raises(LicenceError, match="at least 128 bits"):
        Licence(b"short", "(c) A")


def test_copyright_edit_classes_are_one_edit_away():
    text = "(c) Seller; Buyer 1"
    edits = copyright_edits(text)
    assert set(edits) >= {"substitution", "insertion", "deletion", "case", "whitespace",
                          "lookalike", "transposition"}
    assert len(edits["deletion"]) == len(set(text[:i] + text[i + 1:] for i in range(len(text))))
    assert all(edit != text for group in edits.values() for edit in group)
    assert len(bit_flips(bytes(32))) == 256


def test_licence_cli_issues_once_and_never_prints_the_secret(tmp_path, capsys):
    from isnn_jax.licence import main

    out = tmp_path / "buyer.licence.json"
    assert main(["issue", "--copyright", "(c) S; B; 9", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    licence = Licence.load(out)
    assert licence.fingerprint() in printed and licence.secret.hex() not in printed
    assert main(["issue", "--copyright", "(c) S; B; 9", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert Licence.load(out).secret == licence.secret
