"""A real `skiff server` (TLS, local CA, admin token) driven by the official Azure SDK."""

import os
import sys
import time

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.mgmt.containerinstance import ContainerInstanceManagementClient

sys.path.insert(0, os.path.dirname(__file__))
from skiffserver import SUB, Server  # noqa: E402

LOCATION = "westus"


class StaticToken:
    """Any azure-core TokenCredential works; Skiff's tokens do not expire."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def registry():
    reg = os.environ.get("SKIFF_TEST_REGISTRY")
    if not reg:
        # A failure, not a skip: a suite that skips everything would pass while testing nothing.
        pytest.fail("SKIFF_TEST_REGISTRY is not set: run through scripts/test.sh, which starts the registries")
    return reg


@pytest.fixture(scope="session")
def server(request):
    s = Server().start()
    try:
        yield s
    finally:
        if request.session.testsfailed:
            # Past pytest's capture: a failed run shows what the server saw.
            print(f"\n--- skiff server log (tail), {request.session.testsfailed} test(s) failed:\n{s.log(20000)}", file=sys.__stderr__)
        # Delete what the tests left, then stop and remove everything.
        try:
            c = make_client(s, s.token)
            for g in c.container_groups.list():
                rg = g.id.split("/")[4]
                c.container_groups.begin_delete(rg, g.name, polling_interval=0.2).result()
        finally:
            s.cleanup()


def make_client(server, token):
    return ContainerInstanceManagementClient(
        credential=StaticToken(token),
        subscription_id=SUB,
        base_url=server.url,
        connection_verify=server.ca_path,
        polling_interval=0.2,
    )


@pytest.fixture(scope="session")
def client(server):
    return make_client(server, server.token)


@pytest.fixture(scope="session")
def http(server):
    """Plain requests to Skiff (resource groups, tokens): the SDK for ACI has no RG calls."""
    sess = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would otherwise replace the session's CA.
    sess.trust_env = False
    sess.verify = server.ca_path
    sess.headers["Authorization"] = f"Bearer {server.token}"
    return sess


@pytest.fixture(scope="session")
def resource_group(server, http):
    return make_rg(server, http, "sdk-tests")


def make_rg(server, http, name):
    r = http.put(f"{server.url}/subscriptions/{SUB}/resourcegroups/{name}?api-version=2021-04-01", json={"location": LOCATION})
    assert r.status_code in (200, 201), r.text
    return name


@pytest.fixture(scope="session")
def busybox():
    return f"{registry()}/busybox:latest"


def wait_state(client, rg, name, state, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        g = client.container_groups.get(rg, name)
        last = g.instance_view.state if g.instance_view else None
        if last == state:
            return g
        time.sleep(0.1)
    raise AssertionError(f"{rg}/{name} never reached {state}; last state {last}")
