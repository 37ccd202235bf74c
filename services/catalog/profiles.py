"""Public profiles from the user service's batch read: one HTTP call for any number of users."""
from __future__ import annotations

import threading

import requests

from services.shared.errors import DependencyUnavailable

MAX_IDS_PER_CALL = 100
_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def fetch_profiles(base_url: str, user_ids: list[str], request_id: str, timeout: float = 3.0) -> dict[str, dict]:
    """Profiles by id via `GET /v1/users?ids=...` (ids not found are simply absent)."""
    ids = list(dict.fromkeys(user_ids))
    profiles: dict[str, dict] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        chunk = ids[start:start + MAX_IDS_PER_CALL]
        try:
            response = _session().get(f"{base_url.rstrip('/')}/v1/users", params={"ids": ",".join(chunk)},
                                      headers={"X-Request-ID": request_id}, timeout=timeout)
        except requests.RequestException:
            raise DependencyUnavailable("the user service is unavailable; retry later") from None
        if response.status_code != 200:
            raise DependencyUnavailable(f"the user service answered {response.status_code}; retry later")
        profiles.update({p["id"]: p for p in response.json()["items"]})
    return profiles
