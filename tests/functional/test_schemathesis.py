"""Hostile input (issue 7, item 2): schemathesis against each service's OpenAPI document, through the gateway.

Both documents are read from the gateway (/openapi/user.json, /openapi/catalog.json) and every
request goes to the gateway. For every operation schemathesis sends:

- coverage: its deterministic boundary cases, valid and invalid (each constraint of each
  parameter and body field just inside and just outside, missing and mistyped fields, ...);
- positive: Hypothesis-generated requests that match the spec;
- negative: Hypothesis-generated requests that break it (operations with a body or a query);

and a stateful run chains real calls through OpenAPI links (create a product -> read, change,
review, delete it; submit an import -> read its job; sign up -> read the profile), so the
operations that need an existing id are exercised on ids that exist, not only on random ones.

Each answer must pass: not_a_server_error (no 5xx), status_code_conformance (a status the spec
lists for the operation), response_schema_conformance (the body matches the schema the spec gives
for that status) and content_type_conformance.

Every call carries `Authorization: Bearer <token>` of an account signed up for this module, so
protected operations are tested past their 401. DELETE /v1/sessions/current revokes the token it
is called with, so each of its cases carries a token of its own.

Bounded and reproducible: at most MAX_EXAMPLES generated requests per operation and phase, a
deadline per request, a budget of scenarios and steps for the stateful run, no shrinking there;
Hypothesis is derandomized and the schemathesis seed is fixed.

Why not `schemathesis.pytest.from_fixture(...).parametrize()`: with pytest 9.2 it fails before
running anything (schemathesis 4.32.5 reads `request.node._nodeid`, which pytest 9.2 no longer
has). The tests below use schemathesis's Python API directly instead: `openapi.from_dict`,
`APIOperation.as_strategy` with Hypothesis, `iter_coverage_cases`, `as_state_machine`, and
`Case.call_and_validate`, one pytest item per operation and phase.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.shared.auth import issue_token
from tests.functional.api_checks import TIMEOUT
from tests.functional.conftest import Account, sign_up

SEED = 20261126
MAX_EXAMPLES = 25           # generated requests per operation and phase
SLOW_EXAMPLES = 10          # ... for operations that hash a password (slow by design: argon2)
NO_INPUT_EXAMPLES = 5       # ... for operations without any input (nothing to vary)
DEADLINE_MS = 5_000         # per generated request
REQUEST_TIMEOUT_S = 10
STATEFUL_SCENARIOS = {"catalog": 30, "user": 10}  # per service (the user service's steps hash passwords)
STATEFUL_STEPS = 6          # per scenario
IMPORT_MAX_ITEMS = 3        # products per generated import (see for_testing)

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]

# Every operation of both documents (test_every_operation_is_fuzzed keeps these lists exact).
OPERATIONS = [
    ("user", "POST /v1/users"),
    ("user", "GET /v1/users"),
    ("user", "GET /v1/users/{user_id}"),
    ("user", "GET /v1/users/me"),
    ("user", "PATCH /v1/users/me"),
    ("user", "POST /v1/users/me/export"),
    ("user", "POST /v1/sessions"),
    ("user", "DELETE /v1/sessions/current"),
    ("catalog", "POST /v1/products"),
    ("catalog", "GET /v1/products"),
    ("catalog", "GET /v1/products/{product_id}"),
    ("catalog", "PATCH /v1/products/{product_id}"),
    ("catalog", "DELETE /v1/products/{product_id}"),
    ("catalog", "POST /v1/products/{product_id}/reviews"),
    ("catalog", "GET /v1/categories"),
    ("catalog", "GET /v1/categories/stats"),
    ("catalog", "POST /v1/imports"),
    ("catalog", "GET /v1/jobs/{job_id}"),
]
# Operations with a body or a query string: the ones negative fuzzing can break (a path
# parameter is any string, so there is no invalid value of it to generate).
WITH_BODY_OR_QUERY = {
    "POST /v1/users", "GET /v1/users", "PATCH /v1/users/me", "POST /v1/sessions", "POST /v1/products",
    "GET /v1/products", "PATCH /v1/products/{product_id}", "POST /v1/products/{product_id}/reviews",
    "POST /v1/imports",
}
WITHOUT_INPUT = {"GET /v1/users/me", "POST /v1/users/me/export", "DELETE /v1/sessions/current",
                 "GET /v1/categories", "GET /v1/categories/stats"}
HASHES_A_PASSWORD = {"POST /v1/users", "POST /v1/sessions"}
SIGN_OUT = "DELETE /v1/sessions/current"

PHASES = ["coverage", "positive", "negative"]

# OpenAPI links for the stateful run, by (path, method, status) of the producing operation.
# They are added to the test's copy of the spec (the services' documents have none); each
# target is named by the operationId the service gives it.
LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    ("/v1/products", "post", "201"): {
        "GetProduct": {"operationId": "products_get_product_page_get",
                       "parameters": {"product_id": "$response.body#/id"}},
        "PatchProduct": {"operationId": "products_patch_product_patch",
                         "parameters": {"product_id": "$response.body#/id"}},
        "ReviewProduct": {"operationId": "reviews_create_review_post",
                          "parameters": {"product_id": "$response.body#/id"}},
        "DeleteProduct": {"operationId": "products_delete_product_delete",
                          "parameters": {"product_id": "$response.body#/id"}},
    },
    ("/v1/products/{product_id}", "patch", "200"): {
        "GetPatchedProduct": {"operationId": "products_get_product_page_get",
                              "parameters": {"product_id": "$response.body#/id"}},
        "DeletePatchedProduct": {"operationId": "products_delete_product_delete",
                                 "parameters": {"product_id": "$response.body#/id"}},
    },
    ("/v1/products/{product_id}/reviews", "post", "201"): {
        "GetReviewedProduct": {"operationId": "products_get_product_page_get",
                               "parameters": {"product_id": "$response.body#/product_id"}},
    },
    ("/v1/imports", "post", "202"): {
        "GetImportJob": {"operationId": "imports_get_job_get",
                         "parameters": {"job_id": "$response.body#/job_id"}},
    },
    ("/v1/users", "post", "201"): {
        "GetNewProfile": {"operationId": "users_get_profile_get",
                          "parameters": {"user_id": "$response.body#/id"}},
    },
    ("/v1/users/me", "patch", "200"): {
        "GetPatchedProfile": {"operationId": "users_get_profile_get",
                              "parameters": {"user_id": "$response.body#/id"}},
    },
}


def for_testing(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with the LINKS, and with generated imports kept small.

    Every import the fuzzer gets accepted writes its products into the session's database,
    which the other test modules share; schemathesis's boundary cases would submit 10,000
    products at a time (maxItems) and slow every later listing down. So the test's copy caps an
    import at IMPORT_MAX_ITEMS products: a narrower space to generate from, never a looser spec
    (responses are checked against the schemas as served). The 10,000 boundary is the import tests' job.
    """
    spec = copy.deepcopy(spec)
    for (path, method, status), links in LINKS.items():
        response = spec["paths"].get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is not None:
            response.setdefault("links", {}).update(copy.deepcopy(links))
    imports = spec.get("components", {}).get("schemas", {}).get("ImportBody")
    if imports is not None:
        assert imports.get("maxItems", 0) >= IMPORT_MAX_ITEMS, imports
        imports["maxItems"] = IMPORT_MAX_ITEMS
    return spec


def load_schema(gateway: str, service: str) -> schemathesis.BaseSchema:
    response = requests.get(f"{gateway}/openapi/{service}.json", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    config = schemathesis.Config.from_dict({
        "base-url": gateway,
        "seed": SEED,
        "request-timeout": REQUEST_TIMEOUT_S,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        # Invalid input is the stateless phases' job; scenarios follow the links with valid data.
        "phases": {"stateful": {"max-steps": STATEFUL_STEPS, "generation": {"mode": "positive"}}},
    })
    return schemathesis.openapi.from_dict(for_testing(response.json()), config=config)


def find_operation(schema: schemathesis.BaseSchema, label: str):
    method, path = label.split(" ", 1)
    return schema[path][method]


def examples_for(label: str) -> int:
    if label in WITHOUT_INPUT:
        return NO_INPUT_EXAMPLES
    if label in HASHES_A_PASSWORD:
        return SLOW_EXAMPLES
    return MAX_EXAMPLES


def fuzz_settings(label: str) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples_for(label),
        deadline=DEADLINE_MS,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


def stateful_settings(service: str) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS[service],
        stateful_step_count=STATEFUL_STEPS,
        deadline=None,  # a scenario is several calls; each call has the request timeout
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.generate],  # no shrinking: a failure is reported as found, in bounded time
        suppress_health_check=list(hypothesis.HealthCheck),
    )


# ---- fixtures (all start from the session stack, through `gateway`) ------------------------------

@pytest.fixture(scope="module")
def schemas(gateway) -> dict[str, schemathesis.BaseSchema]:
    return {"user": load_schema(gateway, "user"), "catalog": load_schema(gateway, "catalog")}


@pytest.fixture(scope="module")
def fuzzer(gateway) -> Account:
    """The account whose token every generated request carries."""
    return sign_up(gateway, display_name="Schemathesis")


@pytest.fixture(scope="module")
def headers_for(fuzzer: Account, auth_secret: str) -> Callable[[schemathesis.Case], dict[str, str]]:
    """The Authorization header for a case: the fuzzing account's token, or for the sign-out a
    token of its own (issued as POST /v1/sessions issues one: same secret, claims and issuer)."""
    def headers(case: schemathesis.Case) -> dict[str, str]:
        if case.operation.label == SIGN_OUT:
            token, _ = issue_token(auth_secret, fuzzer.id, ttl_seconds=3600)
            return {"Authorization": f"Bearer {token}"}
        return fuzzer.auth
    return headers


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# ---- the lists above match the documents -----------------------------------------------------------

def test_every_operation_is_fuzzed(schemas):
    operations = {(service, result.ok().label): result.ok()
                  for service, schema in schemas.items() for result in schema.get_all_operations()}
    assert set(operations) == set(OPERATIONS), (
        f"operations missing from OPERATIONS: {sorted(set(operations) - set(OPERATIONS))}; "
        f"gone from the specs: {sorted(set(OPERATIONS) - set(operations))}")
    raw = {label: operation.definition.raw for (_, label), operation in operations.items()}
    assert {label for label, op in raw.items()
            if op.get("requestBody") or any(p["in"] == "query" for p in op.get("parameters", []))} \
        == WITH_BODY_OR_QUERY
    assert {label for label, op in raw.items() if not op.get("requestBody") and not op.get("parameters")} \
        == WITHOUT_INPUT


# ---- stateless: every operation, valid and invalid input -------------------------------------------

MATRIX = [pytest.param(service, label, phase, id=f"{service} {label} {phase}")
          for service, label in OPERATIONS for phase in PHASES
          if phase != "negative" or label in WITH_BODY_OR_QUERY]


@pytest.mark.parametrize(("service", "label", "phase"), MATRIX)
def test_operation(schemas, headers_for, http, service, label, phase):
    schema = schemas[service]
    operation = find_operation(schema, label)

    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers_for(case), session=http, checks=CHECKS)

    if phase == "coverage":
        cases = list(schema.iter_coverage_cases(
            operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=schema.config.generation_for(operation=operation, phase="coverage")))
        assert cases, f"schemathesis generated no coverage cases for {label}"
        failures = []
        for case in cases:  # all of them, so that one report names every failing case
            try:
                call(case)
            except FailureGroup as exc:
                failures.append(str(exc).strip())
        assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n\n" + "\n\n".join(failures)
        return

    mode = GenerationMode.POSITIVE if phase == "positive" else GenerationMode.NEGATIVE

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @fuzz_settings(label)
    def fuzz(case: schemathesis.Case) -> None:
        call(case)

    fuzz()


# ---- stateful: scenarios through the links -----------------------------------------------------

@pytest.mark.parametrize("service", ["catalog", "user"])
def test_stateful(schemas, fuzzer, http, service):
    # The sign-out would revoke the scenario's token; the stateless run covers it.
    schema = schemas[service].exclude(method="DELETE", path="/v1/sessions/current")
    base = schema.as_state_machine()

    class Scenarios(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case):
            return {"headers": dict(fuzzer.auth), "session": http}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, additional_checks=additional_checks,
                                   transport_kwargs=kwargs or None)

    Scenarios.run(settings=stateful_settings(service))


# ---- found by this module once, kept as explicit cases ---------------------------------------------

# Over-long request lines: gunicorn once answered past 4094 bytes with its own HTML 414, and
# nginx past 8 KB with a 500. Now gunicorn accepts what nginx accepts (the app answers 422 for
# a q over 100 characters) and nginx refuses the rest with the documented JSON 414.
LONG_QUERY = [
    pytest.param(700, id="request line ~4.2 KB: reaches the app, 422"),
    pytest.param(2100, id="request line ~12.6 KB: refused by the gateway, JSON 414"),
]


@pytest.mark.parametrize("repeat", LONG_QUERY)
def test_long_query_string_is_a_documented_json_error(schemas, fuzzer, http, repeat):
    operation = find_operation(schemas["catalog"], "GET /v1/products")
    case = operation.Case(query={"q": "\u00e9" * repeat})  # 12 bytes per character once percent-encoded
    case.call_and_validate(headers=fuzzer.auth, session=http, checks=CHECKS)
