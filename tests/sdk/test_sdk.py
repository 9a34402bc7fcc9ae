"""The official azure-mgmt-containerinstance SDK against a real Skiff server, unchanged: only
base_url, a token credential and the server's CA differ from talking to Azure."""

import os
import subprocess
import time

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance.models import (
    Container, ContainerGroup, EnvironmentVariable, Resource, ResourceRequests, ResourceRequirements,
)

from conftest import LOCATION, SUB, make_client, make_rg, wait_state
from skiffserver import skiff_bin


def group(image, command, env=None, restart="Always"):
    return ContainerGroup(
        location=LOCATION,
        os_type="Linux",
        restart_policy=restart,
        containers=[Container(
            name="main",
            image=image,
            command=command,
            environment_variables=[EnvironmentVariable(name=k, value=v) for k, v in (env or {}).items()],
            resources=ResourceRequirements(requests=ResourceRequests(cpu=0.5, memory_in_gb=0.5)),
        )],
    )


def test_lifecycle_through_the_sdk(client, resource_group, busybox):
    rg = resource_group
    cg = client.container_groups.begin_create_or_update(
        rg, "life", group(busybox, ["sh", "-c", "echo hello-$GREETING; sleep 3600"], {"GREETING": "sdk"})).result()
    assert cg.provisioning_state == "Succeeded"
    assert cg.containers[0].image == busybox

    g = wait_state(client, rg, "life", "Running")
    assert g.containers[0].environment_variables[0].value == "sdk"
    assert g.containers[0].instance_view.current_state.state == "Running"

    logs = client.containers.list_logs(rg, "life", "main")
    assert "hello-sdk" in logs.content
    logs = client.containers.list_logs(rg, "life", "main", tail=1, timestamps=True)
    line = logs.content.strip()
    assert line.endswith("hello-sdk") and line[:4].isdigit() and "T" in line.split(" ")[0], line

    # Tags patch (PATCH) keeps the containers running.
    patched = client.container_groups.update(rg, "life", Resource(tags={"team": "a"}))
    assert patched.tags == {"team": "a"}
    assert client.container_groups.get(rg, "life").tags == {"team": "a"}

    client.container_groups.stop(rg, "life")
    wait_state(client, rg, "life", "Stopped")
    client.container_groups.begin_start(rg, "life").result()
    wait_state(client, rg, "life", "Running")
    client.container_groups.begin_restart(rg, "life").result()
    g = wait_state(client, rg, "life", "Running")

    # An update (PUT of a changed document) replaces the containers.
    client.container_groups.begin_create_or_update(
        rg, "life", group(busybox, ["sh", "-c", "echo hello-$GREETING; sleep 3600"], {"GREETING": "v2"})).result()
    logs = ""
    for _ in range(300):
        logs = client.containers.list_logs(rg, "life", "main").content
        if "hello-v2" in logs:
            break
        time.sleep(0.1)
    assert "hello-v2" in logs

    # Skiff answers DELETE with 202 + Azure-AsyncOperation (one of ARM's documented forms).
    client.container_groups.begin_delete(rg, "life").result()
    with pytest.raises(ResourceNotFoundError):
        client.container_groups.get(rg, "life")


def test_lists_follow_next_link(client, server, http, busybox):
    rg = make_rg(server, http, "sdk-paging")
    # The server pages by 2 (--page-size 2): five groups take three pages.
    pollers = [client.container_groups.begin_create_or_update(rg, f"p{i}", group(busybox, ["sleep", "3600"])) for i in range(5)]
    for p in pollers:
        p.result()
    names = sorted(g.name for g in client.container_groups.list_by_resource_group(rg))
    assert names == [f"p{i}" for i in range(5)]
    everywhere = {g.name for g in client.container_groups.list()}
    assert set(names) <= everywhere
    for n in names:
        client.container_groups.begin_delete(rg, n).result()
    assert list(client.container_groups.list_by_resource_group(rg)) == []


def test_location_information(client, busybox, resource_group):
    usages = list(client.location.list_usage(LOCATION))
    assert {u.name.value for u in usages} >= {"ContainerGroups"}
    caps = list(client.location.list_capabilities(LOCATION))
    assert caps and caps[0].capabilities.max_cpu > 0
    # The busybox image is cached once a group has used it.
    client.container_groups.begin_create_or_update(resource_group, "cached", group(busybox, ["true"], restart="Never")).result()
    images = [i.image for i in client.location.list_cached_images(LOCATION)]
    assert any("busybox" in i for i in images), images
    client.container_groups.begin_delete(resource_group, "cached").result()
    ops = list(client.operations.list())
    assert any(o.name.startswith("Microsoft.ContainerInstance/containerGroups") for o in ops)


def test_errors_carry_arm_codes(client, resource_group, busybox):
    with pytest.raises(ResourceNotFoundError) as e:
        client.container_groups.get(resource_group, "does-not-exist")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        client.containers.list_logs(resource_group, "does-not-exist", "main")
    bad = group(busybox, ["true"])
    bad.containers[0].resources.requests.cpu = -1
    with pytest.raises(HttpResponseError) as e:
        client.container_groups.begin_create_or_update(resource_group, "bad", bad).result()
    assert e.value.status_code == 400
    assert e.value.error.code, e.value
    bad = group(busybox, ["true"])
    bad.containers[0].name = "Not_A_Valid_Name"
    with pytest.raises(HttpResponseError) as e:
        client.container_groups.begin_create_or_update(resource_group, "bad", bad).result()
    assert e.value.status_code == 400


def test_tokens_and_tenant_isolation(server, http, client, busybox):
    rg_a = make_rg(server, http, "sdk-tenant-a")
    rg_b = make_rg(server, http, "sdk-tenant-b")
    client.container_groups.begin_create_or_update(rg_a, "private", group(busybox, ["sleep", "3600"])).result()
    r = http.post(f"{server.url}/skiff/tokens", json={"subscription": SUB, "resourceGroup": rg_b})
    assert r.status_code == 201, r.text
    b = make_client(server, r.json()["token"])
    with pytest.raises(ResourceNotFoundError):
        b.container_groups.get(rg_a, "private")
    with pytest.raises(ResourceNotFoundError):
        b.containers.list_logs(rg_a, "private", "main")
    with pytest.raises(ResourceNotFoundError):
        b.container_groups.begin_delete(rg_a, "private").result()
    assert [g.name for g in b.container_groups.list()] == []
    b.container_groups.begin_create_or_update(rg_b, "mine", group(busybox, ["sleep", "3600"])).result()
    assert [g.name for g in b.container_groups.list()] == ["mine"]
    assert client.container_groups.get(rg_a, "private").name == "private"

    assert http.delete(f"{server.url}/skiff/tokens/{r.json()['id']}").status_code == 204
    with pytest.raises(ClientAuthenticationError):
        b.container_groups.get(rg_b, "mine")
    with pytest.raises(ClientAuthenticationError):
        list(make_client(server, "skf_forged").container_groups.list())
    client.container_groups.begin_delete(rg_a, "private").result()
    client.container_groups.begin_delete(rg_b, "mine").result()


def cli(server, *args):
    env = {**os.environ, "SKIFF_SERVER": server.url, "SKIFF_TOKEN": server.token, "SKIFF_CA_CERT": server.ca_path,
           "SKIFF_CONFIG": "/nonexistent/config.json", "SKIFF_DATA_DIR": "/nonexistent"}
    out = subprocess.run([skiff_bin(), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"skiff {args}: {out.stderr}"
    return out.stdout


def test_export_round_trip_and_az_paths(server, client, resource_group, busybox, tmp_path):
    """`skiff container export` writes what `create --file` (az's generic-resource path) accepts."""
    g = group(busybox, ["sh", "-c", "echo exported; sleep 3600"], {"A": "1"})
    g.containers[0].environment_variables.append(EnvironmentVariable(name="S", secure_value="hidden"))
    client.container_groups.begin_create_or_update(resource_group, "exp", g).result()
    out = tmp_path / "exp.yaml"
    cli(server, "container", "export", "-g", resource_group, "-n", "exp", "-f", str(out))
    text = out.read_text()
    assert "hidden" not in text and "apiVersion" in text
    client.container_groups.begin_delete(resource_group, "exp").result()
    cli(server, "container", "create", "-g", resource_group, "-f", str(out))
    again = wait_state(client, resource_group, "exp", "Running")
    assert [e.value for e in again.containers[0].environment_variables if e.name == "A"] == ["1"]
    assert "exported" in client.containers.list_logs(resource_group, "exp", "main").content
    client.container_groups.begin_delete(resource_group, "exp").result()
