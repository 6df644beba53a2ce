"""Modes, pseudonyms, the tensor helper, errors, and that no identifier value leaks out."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from apps.gateway.deid import (
    DeidError,
    InputTooLong,
    InvalidMode,
    InvalidUTF8,
    KeyRequired,
    UnknownType,
    UnsupportedDatatype,
    deidentify,
    deidentify_tensor,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TEXT = "Patient: Maria Gonzalez, phone (617) 555-0143, MRN: 00482913. Maria called 617.555.0143 again."


def test_redact_uses_typed_placeholders_and_counts():
    result = deidentify(TEXT, "redact")
    assert result.text == "Patient: [NAME], phone [PHONE], MRN: [MRN]. [NAME] called [PHONE] again."
    assert result.found == {"NAME": 2, "PHONE": 2, "MRN": 1}


def test_mask_keeps_shape():
    result = deidentify("Phone (617) 555-0143, 手机13800138000", "mask")
    assert result.text == "Phone (***) ***-****, 手机***********"


def test_pseudonymise_is_consistent_within_a_key_and_across_spellings():
    result = deidentify(TEXT, "pseudonymise", key=KEY)
    tokens = [t for t in result.text.replace(",", " ").replace(".", " ").split() if t.startswith("[")]
    name1, phone1, mrn, name2, phone2 = tokens
    assert name1.startswith("[NAME-") and len(name1) == len("[NAME-") + 8 + 1
    assert phone1 == phone2, "(617) 555-0143 and 617.555.0143 are the same number"
    assert mrn.startswith("[MRN-")
    assert deidentify(TEXT, "pseudonymise", key=KEY).text == result.text


def test_pseudonym_depends_on_the_key_and_on_the_value():
    a = deidentify("MRN: 00482913", "pseudonymise", key=KEY).text
    b = deidentify("MRN: 00482913", "pseudonymise", key=OTHER_KEY).text
    c = deidentify("MRN: 00482914", "pseudonymise", key=KEY).text
    assert len({a, b, c}) == 3


def test_pseudonymise_needs_a_real_key():
    with pytest.raises(KeyRequired):
        deidentify(TEXT, "pseudonymise")
    with pytest.raises(KeyRequired):
        deidentify(TEXT, "pseudonymise", key=b"short")


def test_unknown_mode_and_type_are_refused():
    with pytest.raises(InvalidMode):
        deidentify(TEXT, "shred")
    with pytest.raises(UnknownType):
        deidentify(TEXT, "redact", types=["NAME", "SHOE_SIZE"])


def test_types_restrict_what_is_replaced():
    result = deidentify(TEXT, "redact", types=["PHONE"])
    assert "Maria Gonzalez" in result.text and "00482913" in result.text
    assert result.found == {"PHONE": 2}


def test_text_without_identifiers_is_returned_unchanged():
    text = "Metformin 500 mg twice daily. BP 132/84. 无特殊。"
    assert deidentify(text) == deidentify(text, "mask")
    assert deidentify(text).text == text and deidentify(text).found == {}


def test_length_cap_is_per_element_and_clear():
    with pytest.raises(InputTooLong, match="limit of 100"):
        deidentify("x" * 101, max_length=100)
    assert deidentify("x" * 100, max_length=100).text == "x" * 100


def test_result_and_errors_never_carry_values(caplog):
    caplog.set_level(logging.DEBUG)
    result = deidentify(TEXT, "redact")
    assert "Gonzalez" not in repr(result) and "555" not in repr(result)
    with pytest.raises(InvalidUTF8) as err:
        deidentify_tensor([b"SSN 123-45-6789 \xff"], "BYTES")
    assert "6789" not in str(err.value)
    assert caplog.records == []


# ---- tensors ---------------------------------------------------------------------------------


def test_bytes_tensor_json_data_nested():
    data = [["Patient: Maria Gonzalez", "no identifiers"], ["MRN: 00482913", "SSN 123-45-6789"]]
    result = deidentify_tensor(data, "BYTES", "redact")
    assert result.data == [["Patient: [NAME]", "no identifiers"], ["MRN: [MRN]", "SSN [SSN]"]]
    assert result.found == {"NAME": 1, "MRN": 1, "SSN": 1}
    assert data[0][0] == "Patient: Maria Gonzalez", "the input is not modified"


def test_bytes_tensor_numpy_object_array_keeps_bytes_and_shape():
    array = np.array([[b"Phone (617) 555-0143"], [b"MRN: 00482913"]], dtype=object)
    result = deidentify_tensor(array, "BYTES", "redact")
    assert result.data.shape == (2, 1) and result.data.dtype == object
    assert result.data[0, 0] == b"Phone [PHONE]" and result.data[1, 0] == b"MRN: [MRN]"
    fixed = deidentify_tensor(np.array([b"SSN 123-45-6789"]), "BYTES")
    assert fixed.data.tolist() == [b"SSN [SSN]"]


def test_bytes_tensor_utf8_round_trip():
    result = deidentify_tensor(["患者王小明，手机13800138000".encode()], "BYTES")
    assert result.data == ["患者[NAME]，手机[CN_MOBILE]".encode()]


def test_numeric_tensors_pass_untouched():
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert deidentify_tensor(floats, "FP32").data is floats
    ints = [5550143, 123456789]
    result = deidentify_tensor(ints, "INT64")
    assert result.data is ints and result.found == {}


def test_tensor_errors():
    with pytest.raises(InvalidUTF8, match="element 1"):
        deidentify_tensor([b"ok", b"\xc3\x28"], "BYTES")
    with pytest.raises(UnsupportedDatatype):
        deidentify_tensor([1], "COMPLEX128")
    with pytest.raises(DeidError, match="expected a string"):
        deidentify_tensor([1, 2], "BYTES")
    with pytest.raises(InputTooLong):
        deidentify_tensor([b"a" * 11], "BYTES", max_length=10)


def test_tensor_pseudonyms_consistent_across_elements():
    result = deidentify_tensor(["MRN: 00482913", "see MRN 00482913"], "BYTES", "pseudonymise", key=KEY)
    first, second = result.data
    assert first.split()[-1] == second.split()[-1]
