"""End to end with an S3 remote: a real S3 server (moto's) on 127.0.0.1, and the real `dvc`
commands: push, a fresh clone, pull, nothing to rerun, the same predictions."""

import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.projects import sh, trained_project, user_env

pytestmark = pytest.mark.e2e

MISSING = [
    name
    for name, module in (("dvc-s3", "dvc_s3"), ("moto", "moto"))
    if importlib.util.find_spec(module) is None
]
if MISSING:
    pytest.skip(
        f"{' and '.join(MISSING)} not installed (the test extra has both: "
        "pip install -c requirements.lock -e '.[test]')",
        allow_module_level=True,
    )

BUCKET = "team-dvc"
# Fake credentials for the local server only; the real ones never reach a test.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """moto's S3 server on a free port of 127.0.0.1, with one empty bucket: its endpoint URL
    and the environment (fake credentials, no AWS config files) that the commands run in."""
    port = free_port()
    log = tmp_path / "moto.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    command = [str(moto_server)] if moto_server.exists() else [sys.executable, "-m", "moto.server"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    env = user_env(
        **CREDENTIALS,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"moto_server exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto_server did not start:\n{log.read_text()}"
                time.sleep(0.2)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)  # DVC does not create it (NoSuchBucket)
        yield endpoint, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def s3_client(endpoint: str):
    import boto3  # installed with dvc-s3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def bucket_keys(endpoint: str) -> list[str]:
    s3 = s3_client(endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_push_to_s3_then_clone_and_pull_predicts_the_same(s3_server, tmp_path_factory, tmp_path):
    endpoint, env = s3_server
    project = trained_project(tmp_path_factory, "s3")
    sh(project, "dvc", "remote", "add", "-d", "s3r", f"s3://{BUCKET}/dvc", env=env)
    sh(project, "dvc", "remote", "modify", "s3r", "endpointurl", endpoint, env=env)
    assert "testing" not in (project / ".dvc" / "config").read_text()  # no credentials in git
    sh(project, "git", "add", "-A", env=env)
    sh(project, "git", "commit", "-q", "-m", "S3 remote", env=env)
    sh(project, "dvc", "push", env=env)
    keys = bucket_keys(endpoint)
    assert keys and all(key.startswith("dvc/files/md5/") for key in keys), keys

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    assert not (clone / "models" / "model.pt").exists()
    sh(clone, "dvc", "pull", env=env)
    assert "up to date" in sh(clone, "dvc", "status", env=env)
    assert (clone / "models" / "model.pt").read_bytes() == (
        project / "models" / "model.pt"
    ).read_bytes()
    texts = ["physics1 physics2 the", "chemistry3 chemistry4 of", "maths0 what"]
    predict = ("python", "stages/predict.py", "--format", "json", *texts)
    pulled = json.loads(sh(clone, *predict, env=env))
    assert [row["text"] for row in pulled] == texts
    assert [row["label"] for row in pulled] == [
        row["label"] for row in json.loads(sh(project, *predict, env=env))
    ]
