"""An import's items, checked one by one in its job with NewProduct (the rules of POST /v1/products).

Submission checks only that the body is an array (models.ImportBody); here each item is
validated, the valid ones are given to the writer in runs of consecutive positions (their
product ids derive from (job, position), store.import_id), and every other one is reported
as {index, field, reason}, with `more_errors` when it had more than one problem. `merge`
makes one import result out of the results of its parts.
"""
from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from services.shared.api import validation_details

from .models import NewProduct


def check(items: list, first_index: int) -> tuple[list[tuple[int, dict]], list[dict]]:
    """([(index, product fields)] of the valid items, [rejection] of the others); indexes start at first_index."""
    valid, rejected = [], []
    for index, item in enumerate(items, first_index):
        try:
            valid.append((index, NewProduct.model_validate(item).model_dump()))
        except ValidationError as exc:
            details = validation_details(exc, whole="(item)")
            rejection = {"index": index, "field": details[0]["field"], "reason": details[0]["message"]}
            if len(details) > 1:
                rejection["more_errors"] = len(details) - 1
            rejected.append(rejection)
    return valid, rejected


def runs(valid: list[tuple[int, dict]]) -> Iterator[tuple[int, list[dict]]]:
    """(first index, products) for each run of consecutive indexes."""
    start, run = 0, []  # type: tuple[int, list[dict]]
    for index, fields in valid:
        if run and index != start + len(run):
            yield start, run
            run = []
        if not run:
            start = index
        run.append(fields)
    if run:
        yield start, run


def result(imported: int, rejected: list[dict], categories: set[str]) -> dict:
    """What an import (or a part of one) reports."""
    return {"imported": imported, "rejected": rejected, "categories": sorted(categories)}


def merge(results: list[dict]) -> dict:
    """One import's result from its parts' results, given in the order of their items."""
    return result(sum(r.get("imported", 0) for r in results), [item for r in results for item in r.get("rejected", [])],
                  {slug for r in results for slug in r.get("categories", [])})
