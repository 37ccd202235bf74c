"""Bad input on every route that takes a body: always a JSON error with the right status, never a 5xx.

DESIGN.md: 400 malformed JSON, 413 body too large, 415 not JSON, 422 fails validation (details
name each field), 404/405 JSON; "bad input never yields 500".
"""
from __future__ import annotations

import json
import unicodedata

import pytest
import requests

from tests.functional.api_checks import TIMEOUT, assert_error, post_raw
from tests.functional.conftest import replica_url, sign_up, unique_email

PASSWORD = "correct horse battery"
APP_LIMIT = 1024 * 1024          # MAX_BODY_BYTES default of a replica
GATEWAY_LIMIT = 16 * 1024 * 1024  # client_max_body_size of the gateway


@pytest.fixture(scope="module")
def member(gateway):
    """One account whose token the PATCH cases use (its profile changes during the module)."""
    return sign_up(gateway, display_name="Bad Input")


def valid_body(route: str) -> dict:
    if route == "POST /v1/users":
        return {"email": unique_email("bad"), "password": PASSWORD, "display_name": "Valid Name"}
    if route == "POST /v1/sessions":
        return {"email": unique_email("nobody"), "password": PASSWORD}
    return {"display_name": "Valid Name", "bio": "Valid bio"}


BODY_ROUTES = ["POST /v1/users", "POST /v1/sessions", "PATCH /v1/users/me"]


def send(base: str, route: str, member, *, data: bytes | str | None = None, json_body=None,
         content_type: str | None = "application/json"):
    method, path = route.split(" ", 1)
    headers = member.auth if path == "/v1/users/me" else {}
    if json_body is not None:
        return requests.request(method, f"{base}{path}", json=json_body, headers=headers, timeout=TIMEOUT)
    return post_raw(f"{base}{path}", data if data is not None else b"", content_type, headers=headers, method=method)


# ---- 400 malformed JSON ---------------------------------------------------------------------

MALFORMED = {
    "truncated object": b'{"email": "a@example.com", ',
    "single quotes": b"{'email': 'a@example.com'}",
    "trailing comma": b'{"email": "a@example.com",}',
    "bare word": b"hello",
    "two documents": b'{"a": 1} {"b": 2}',
    "empty body": b"",
    "not UTF-8": b'{"display_name": "\xe9t\xe9"}',
    "unterminated string": b'{"display_name": "abc}',
}


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_json_is_400(gateway, member, route, case):
    assert_error(send(gateway, route, member, data=MALFORMED[case]), 400, "malformed_json")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_malformed_json(gateway, member, literal):
    data = '{"email": "a@example.com", "password": %s}' % literal
    assert_error(send(gateway, "POST /v1/sessions", member, data=data), 400, "malformed_json")


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_deeply_nested_json_is_a_client_error(gateway, member, route):
    depth = 100_000  # 200 KB, well under the body limit
    response = send(gateway, route, member, data="[" * depth + "]" * depth)
    assert response.status_code in (400, 413, 422), response.text
    assert_error(response, response.status_code)


# ---- 415 not JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("content_type", [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    None,  # no Content-Type at all
])
def test_body_that_is_not_declared_json_is_415(gateway, member, route, content_type):
    data = json.dumps(valid_body(route))  # even a valid JSON document is refused under the wrong type
    assert_error(send(gateway, route, member, data=data, content_type=content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_html_form_post_is_415(gateway, member, route):
    method, path = route.split(" ", 1)
    headers = member.auth if path == "/v1/users/me" else {}
    response = requests.request(method, f"{gateway}{path}", data=valid_body(route), headers=headers, timeout=TIMEOUT)
    assert_error(response, 415, "unsupported_media_type")


def test_json_with_charset_parameter_is_accepted(gateway):
    email = unique_email("charset")
    data = json.dumps({"email": email, "password": PASSWORD, "display_name": "Charset"})
    response = post_raw(f"{gateway}/v1/users", data, "application/json; charset=utf-8")
    assert response.status_code == 201, response.text


# ---- 413 too large --------------------------------------------------------------------------

def padded(route: str, size: int) -> bytes:
    """A well-formed JSON object of about `size` bytes (a long string in a real field)."""
    body = valid_body(route)
    field = "password" if "password" in body else "bio"
    body[field] = ""
    overhead = len(json.dumps(body))
    body[field] = "x" * max(0, size - overhead)
    return json.dumps(body).encode()


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("replica", ["user-1", "user-2"])
def test_body_over_the_app_limit_is_413_at_the_replica(stack, member, route, replica):
    response = send(replica_url(stack, replica), route, member, data=padded(route, 2 * 1024 * 1024))
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_body_just_under_the_app_limit_is_read_and_validated(stack, member, route):
    # Not refused for its size: it is parsed, and the over-long field fails validation.
    response = send(replica_url(stack, "user-1"), route, member, data=padded(route, APP_LIMIT - 1024))
    field = "bio" if route.startswith("PATCH") else "password"
    assert_error(response, 422, "validation_failed", field=field)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_body_over_the_gateway_limit_is_413_json(gateway, member, route):
    response = send(gateway, route, member, data=padded(route, 20 * 1024 * 1024))
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_body_between_the_limits_is_413_through_the_gateway(gateway, member, route):
    response = send(gateway, route, member, data=padded(route, 3 * 1024 * 1024))
    assert_error(response, 413, "payload_too_large")


# ---- 422: JSON that is not an object --------------------------------------------------------

@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("document", ['["a", "b"]', '"just a string"', "42", "null", "true", "[]"])
def test_body_that_is_not_an_object_is_422(gateway, member, route, document):
    error = assert_error(send(gateway, route, member, data=document), 422, "validation_failed")
    assert error["details"], error


# ---- 422: missing fields --------------------------------------------------------------------

@pytest.mark.parametrize("route,field", [
    ("POST /v1/users", "email"), ("POST /v1/users", "password"), ("POST /v1/users", "display_name"),
    ("POST /v1/sessions", "email"), ("POST /v1/sessions", "password"),
])
def test_missing_field_is_422_naming_it(gateway, member, route, field):
    body = valid_body(route)
    del body[field]
    error = assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field=field)
    assert any(d["field"] == field and d.get("type") == "missing" for d in error["details"]), error


def test_empty_object_names_every_missing_field(gateway, member):
    error = assert_error(send(gateway, "POST /v1/users", member, json_body={}), 422, "validation_failed")
    assert {"email", "password", "display_name"} <= {d["field"] for d in error["details"]}


def test_patch_with_nothing_to_change_is_422(gateway, member):
    error = assert_error(send(gateway, "PATCH /v1/users/me", member, json_body={}), 422, "validation_failed")
    assert error["details"], error


# ---- 422: wrong types -----------------------------------------------------------------------

WRONG_VALUES = {"number": 123, "float": 1.5, "boolean": True, "null": None, "array": ["x"], "object": {"x": "y"},
                "array of numbers": [1, 2]}
TEXT_FIELDS = [("POST /v1/users", "email"), ("POST /v1/users", "password"), ("POST /v1/users", "display_name"),
               ("POST /v1/sessions", "email"), ("POST /v1/sessions", "password"),
               ("PATCH /v1/users/me", "display_name"), ("PATCH /v1/users/me", "bio")]
# (The user service's bodies have no numeric field: "a string for a number" has no case here.)


@pytest.mark.parametrize("route,field,kind", [
    (route, field, kind) for route, field in TEXT_FIELDS for kind in WRONG_VALUES
])
def test_wrongly_typed_field_is_422_naming_it(gateway, member, route, field, kind):
    body = valid_body(route)
    body[field] = WRONG_VALUES[kind]
    assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field=field)


def test_numbers_are_not_coerced_to_text(gateway):
    # Strict types: 12345678 must not become the password "12345678", nor 42 the name "42".
    body = {"email": unique_email("coerce"), "password": 12345678, "display_name": 42}
    error = assert_error(requests.post(f"{gateway}/v1/users", json=body, timeout=TIMEOUT), 422, "validation_failed")
    assert {"password", "display_name"} <= {d["field"] for d in error["details"]}
    assert_error(requests.post(f"{gateway}/v1/sessions", json={"email": body["email"], "password": "12345678"},
                               timeout=TIMEOUT), 401, "unauthorized")


def test_patch_with_nulls_is_refused_and_changes_nothing(gateway, member):
    # Absent means "keep"; null is not a value: it could otherwise blank the required name.
    before = requests.get(f"{gateway}/v1/users/me", headers=member.auth, timeout=TIMEOUT).json()
    assert_error(send(gateway, "PATCH /v1/users/me", member, json_body={"display_name": None, "bio": "with a null"}),
                 422, "validation_failed", field="display_name")
    after = requests.get(f"{gateway}/v1/users/me", headers=member.auth, timeout=TIMEOUT).json()
    assert after == before


# ---- 422: unknown fields --------------------------------------------------------------------

@pytest.mark.parametrize("route,extra", [
    ("POST /v1/users", {"role": "admin"}),
    ("POST /v1/users", {"id": "0" * 24}),
    ("POST /v1/users", {"password_hash": "x"}),
    ("POST /v1/sessions", {"remember_me": True}),
    ("PATCH /v1/users/me", {"email": "stolen@example.com"}),
    ("PATCH /v1/users/me", {"created_at": "2000-01-01T00:00:00Z"}),
])
def test_unknown_field_is_422_naming_it(gateway, member, route, extra):
    body = valid_body(route) | extra
    (name,) = extra
    assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field=name)


def test_patch_cannot_change_the_email(gateway, member):
    send(gateway, "PATCH /v1/users/me", member, json_body={"bio": "x", "email": "stolen@example.com"})
    me = requests.get(f"{gateway}/v1/users/me", headers=member.auth, timeout=TIMEOUT).json()
    assert me["email"] == member.email


# ---- 422: lengths ---------------------------------------------------------------------------

def long_email(length: int) -> str:
    """A syntactically valid address of exactly `length` characters (64-character local part)."""
    local = "e" * 56 + unique_email()[-20:-12]  # 8 random hex characters keep it unique
    prefix_len = length - len(local) - 1 - len(".example.com")
    count = -(-(prefix_len + 1) // 64)  # labels of at most 63 characters, joined by dots
    letters = prefix_len - (count - 1)
    labels = ["d" * (letters // count + (1 if i < letters % count else 0)) for i in range(count)]
    email = f"{local}@{'.'.join(labels)}.example.com"
    assert len(email) == length, (len(email), email)
    return email


@pytest.mark.parametrize("route,field,value", [
    ("POST /v1/users", "display_name", "n" * 81),
    ("POST /v1/users", "password", "p" * 257),
    ("POST /v1/users", "password", "p" * 7),
    ("POST /v1/users", "email", None),  # 255 characters, built below
    ("POST /v1/users", "display_name", ""),
    ("POST /v1/users", "display_name", "    "),
    ("POST /v1/sessions", "email", "e" * 255),
    ("POST /v1/sessions", "password", "p" * 257),
    ("POST /v1/sessions", "email", ""),
    ("POST /v1/sessions", "password", ""),
    ("PATCH /v1/users/me", "display_name", "n" * 81),
    ("PATCH /v1/users/me", "display_name", "   "),
    ("PATCH /v1/users/me", "bio", "b" * 1001),
])
def test_out_of_bounds_length_is_422_naming_the_field(gateway, member, route, field, value):
    body = valid_body(route)
    body[field] = long_email(255) if value is None else value
    if value is None:
        assert len(body[field]) == 255
    assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field=field)


def test_longest_allowed_values_are_accepted(gateway, member):
    email = long_email(254)
    assert len(email) == 254
    created = requests.post(f"{gateway}/v1/users", json={"email": email, "password": "p" * 256,
                                                          "display_name": "n" * 80}, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    assert created.json()["display_name"] == "n" * 80
    assert requests.post(f"{gateway}/v1/sessions", json={"email": email, "password": "p" * 256},
                         timeout=TIMEOUT).status_code == 201
    shortest = requests.post(f"{gateway}/v1/users", json={"email": unique_email("short"), "password": "p" * 8,
                                                           "display_name": "n"}, timeout=TIMEOUT)
    assert shortest.status_code == 201, shortest.text
    patched = send(gateway, "PATCH /v1/users/me", member, json_body={"display_name": "m" * 80, "bio": "b" * 1000})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["display_name"], patched.json()["bio"]) == ("m" * 80, "b" * 1000)


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com", "a@@example.com"])
def test_invalid_email_on_sign_up_is_422(gateway, email):
    body = {"email": email, "password": PASSWORD, "display_name": "X"}
    assert_error(requests.post(f"{gateway}/v1/users", json=body, timeout=TIMEOUT), 422, "validation_failed",
                 field="email")


# ---- 422: control characters ----------------------------------------------------------------

CONTROL = {"NUL": "\u0000", "BEL": "\u0007", "ESC": "\u001b", "DEL": "\u007f", "CR": "\r", "NEL": "\u0085",
           "lone surrogate": "\ud800"}


@pytest.mark.parametrize("route,field", [("POST /v1/users", "display_name"), ("PATCH /v1/users/me", "display_name"),
                                         ("PATCH /v1/users/me", "bio")])
@pytest.mark.parametrize("char", list(CONTROL))
def test_control_characters_are_422_naming_the_field(gateway, member, route, field, char):
    body = valid_body(route)
    body[field] = f"before{CONTROL[char]}after"
    assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field=field)


@pytest.mark.parametrize("route", ["POST /v1/users", "PATCH /v1/users/me"])
@pytest.mark.parametrize("char", ["\n", "\t"])
def test_display_name_is_a_single_line(gateway, member, route, char):
    body = valid_body(route)
    body["display_name"] = f"two{char}lines"
    assert_error(send(gateway, route, member, json_body=body), 422, "validation_failed", field="display_name")


@pytest.mark.parametrize("char", ["\u2028", "\u2029"])
def test_display_name_rejects_unicode_line_separators(gateway, char):
    body = {"email": unique_email("linesep"), "password": PASSWORD, "display_name": f"two{char}lines"}
    assert_error(requests.post(f"{gateway}/v1/users", json=body, timeout=TIMEOUT), 422, "validation_failed",
                 field="display_name")


def test_bio_may_have_several_lines_and_tabs(gateway, member):
    bio = "line one\nline two\n\tindented"
    response = send(gateway, "PATCH /v1/users/me", member, json_body={"bio": bio})
    assert response.status_code == 200, response.text
    assert response.json()["bio"] == bio


def test_surrogate_or_nul_in_credentials_is_not_a_server_error(gateway):
    # Raw JSON escapes: a lone surrogate cannot be encoded to UTF-8 for hashing or the database.
    for route, data in [
        ("/v1/users", '{"email": "%s", "password": "abcdefgh\\ud800", "display_name": "x"}' % unique_email()),
        ("/v1/sessions", '{"email": "%s", "password": "abcdefgh\\udfff"}' % unique_email()),
        ("/v1/sessions", '{"email": "a\\ud800@example.com", "password": "abcdefgh"}'),
        ("/v1/users", '{"email": "a\\ud800@example.com", "password": "abcdefgh", "display_name": "x"}'),
    ]:
        response = post_raw(f"{gateway}{route}", data)
        assert_error(response, 422, "validation_failed")
    nul_login = requests.post(f"{gateway}/v1/sessions", json={"email": "a\u0000b@example.com",
                                                               "password": "abc\u0000defgh"}, timeout=TIMEOUT)
    assert_error(nul_login, 401, "unauthorized")


# ---- Unicode text is accepted and returned unchanged (NFC) ----------------------------------

UNICODE_NAMES = {
    "accents": "José Müller-Łukasiewicz Ångström",
    "CJK": "山田太郎 김민준 さくら",
    "emoji": "Party 🎉 family 👩‍👩‍👧 flag 🇫🇷",
    "RTL": "مرحبا שלום",
}


@pytest.mark.parametrize("kind", list(UNICODE_NAMES))
def test_unicode_display_name_round_trips(gateway, kind):
    name = UNICODE_NAMES[kind]
    assert unicodedata.is_normalized("NFC", name)
    created = requests.post(f"{gateway}/v1/users", json={"email": unique_email("uni"), "password": PASSWORD,
                                                          "display_name": name}, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    assert created.json()["display_name"] == name
    profile = requests.get(f"{gateway}/v1/users/{created.json()['id']}", timeout=TIMEOUT).json()
    assert profile["display_name"] == name


def test_unicode_profile_update_round_trips(gateway, member):
    changes = {"display_name": UNICODE_NAMES["emoji"],
               "bio": "Ça va? 日本語のテキスト.\nEmoji: 🧑🏽‍💻 🐍 — and a math sign: ∑ ≤ ∞"}
    response = send(gateway, "PATCH /v1/users/me", member, json_body=changes)
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in changes} == changes
    profile = requests.get(f"{gateway}/v1/users/{member.id}", timeout=TIMEOUT).json()
    assert {k: profile[k] for k in changes} == changes
    listed = requests.get(f"{gateway}/v1/users", params={"ids": member.id}, timeout=TIMEOUT).json()["items"][0]
    assert {k: listed[k] for k in changes} == changes


def test_decomposed_text_is_returned_in_nfc(gateway, member):
    decomposed_name = "Jose\u0301 Mu\u0308ller"
    decomposed_bio = "cafe\u0301 n\u0303"
    response = send(gateway, "PATCH /v1/users/me", member,
                    json_body={"display_name": decomposed_name, "bio": decomposed_bio})
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == unicodedata.normalize("NFC", decomposed_name) == "José Müller"
    assert response.json()["bio"] == unicodedata.normalize("NFC", decomposed_bio)
    profile = requests.get(f"{gateway}/v1/users/{member.id}", timeout=TIMEOUT).json()
    assert profile["display_name"] == "José Müller"


def test_eighty_emoji_fit_in_a_display_name(gateway, member):
    name = "🎉" * 80  # 80 characters (code points), 320 bytes of UTF-8
    response = send(gateway, "PATCH /v1/users/me", member, json_body={"display_name": name})
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == name
    assert_error(send(gateway, "PATCH /v1/users/me", member, json_body={"display_name": "🎉" * 81}),
                 422, "validation_failed", field="display_name")


def test_display_name_limit_counts_normalized_characters(gateway, member):
    response = send(gateway, "PATCH /v1/users/me", member, json_body={"display_name": "e\u0301" * 80})
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "é" * 80


# ---- Unknown routes and wrong methods -------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v1/users/me/nope", "/v1/sessions/other",
                                  "/v1/users/abc/def", "/v2/users", "/nowhere"])
def test_unknown_route_is_404_json(gateway, path):
    assert_error(requests.get(f"{gateway}{path}", timeout=TIMEOUT), 404, "not_found")


@pytest.mark.parametrize("replica", ["user-1", "user-2"])
def test_unknown_route_on_a_replica_is_404_json(stack, replica):
    assert_error(requests.post(f"{replica_url(stack, replica)}/v1/nothing-here", json={}, timeout=TIMEOUT),
                 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/v1/users/me", {"GET", "PATCH"}),
    ("DELETE", "/v1/users/me", {"GET", "PATCH"}),
    ("POST", "/v1/users/me", {"GET", "PATCH"}),
    ("DELETE", "/v1/users", {"GET", "POST"}),
    ("PATCH", "/v1/users", {"GET", "POST"}),
    ("GET", "/v1/sessions", {"POST"}),
    ("PUT", "/v1/sessions", {"POST"}),
    ("GET", "/v1/sessions/current", {"DELETE"}),
    ("POST", "/v1/sessions/current", {"DELETE"}),
    ("DELETE", "/v1/users/" + "0" * 24, {"GET"}),
    ("PATCH", "/v1/users/" + "0" * 24, {"GET"}),
])
def test_wrong_method_is_405_json_with_allow(gateway, method, path, allowed):
    response = requests.request(method, f"{gateway}{path}", json={}, timeout=TIMEOUT)
    assert_error(response, 405, "method_not_allowed")
    advertised = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
    assert allowed <= advertised, response.headers.get("Allow")


def test_the_text_rules_refuse_exactly_control_surrogate_private_and_bidi_characters():
    """The regex classes behind every text field agree with Unicode's categories, for every code point.

    Long text refuses Cc (but newline and tab), Cs, Co and the bidi overrides/isolates; one-line
    text also refuses tab, newline and the Zl/Zp separators.
    """
    from services.shared.validation import _BIDI_CONTROLS, _CONTROL_CHARS, _LINE_BREAKS

    bidi = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    wrong = []
    for code in range(0x110000):
        ch = chr(code)
        category = unicodedata.category(ch)
        if bool(_CONTROL_CHARS.match(ch)) != (category in ("Cc", "Cs", "Co") and ch not in "\n\t"):
            wrong.append(("control", hex(code)))
        if bool(_BIDI_CONTROLS.match(ch)) != (ch in bidi):
            wrong.append(("bidi", hex(code)))
        if bool(_LINE_BREAKS.match(ch)) != (ch in "\n\t" or category in ("Zl", "Zp")):
            wrong.append(("line break", hex(code)))
    assert wrong == []
