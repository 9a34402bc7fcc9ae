"""execute_command / attach through the SDK, then the websocket with the returned password.

Needs `websockets` (pinned in requirements.txt).
"""

import ssl

import pytest
from azure.mgmt.containerinstance.models import ContainerExecRequest, ContainerExecRequestTerminalSize

from conftest import wait_state
from test_sdk import group

# Pinned in requirements.txt: a missing module is an error, not a reason to skip.
import websockets.exceptions as websockets_exceptions  # noqa: E402
import websockets.sync.client as websockets_sync  # noqa: E402


def ws_roundtrip(server, uri, password, send=None, want=b""):
    ctx = ssl.create_default_context(cafile=server.ca_path)
    got = b""
    with websockets_sync.connect(uri, ssl=ctx if uri.startswith("wss") else None, open_timeout=10) as ws:
        ws.send(password)
        if send is not None:
            ws.send(send)
        while want not in got:
            msg = ws.recv(timeout=10)
            got += msg if isinstance(msg, bytes) else msg.encode()
    return got


def test_execute_command(server, client, resource_group, busybox):
    client.container_groups.begin_create_or_update(resource_group, "ex", group(busybox, ["sleep", "3600"])).result()
    wait_state(client, resource_group, "ex", "Running")
    r = client.containers.execute_command(resource_group, "ex", "main", ContainerExecRequest(
        command="/bin/sh", terminal_size=ContainerExecRequestTerminalSize(rows=24, cols=80)))
    assert r.web_socket_uri and r.password
    out = ws_roundtrip(server, r.web_socket_uri, r.password, send="echo exec-$((40+2))\n", want=b"exec-42")
    assert b"exec-42" in out
    # The session is single-use: a second connection is refused at the handshake (404), not
    # merely left waiting (a timeout here would be a failure, not a pass).
    with pytest.raises(websockets_exceptions.InvalidStatus) as refused:
        ws_roundtrip(server, r.web_socket_uri, r.password, send="true\n", want=b"never")
    assert refused.value.response.status_code == 404
    client.container_groups.begin_delete(resource_group, "ex").result()


def test_attach(server, client, resource_group, busybox):
    client.container_groups.begin_create_or_update(
        resource_group, "at", group(busybox, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])).result()
    wait_state(client, resource_group, "at", "Running")
    r = client.containers.attach(resource_group, "at", "main")
    assert r.web_socket_uri and r.password
    assert b"tick" in ws_roundtrip(server, r.web_socket_uri, r.password, want=b"tick")
    client.container_groups.begin_delete(resource_group, "at").result()
