"""Async jobs on SQS (moto's server): a worker process completes them; a poison message reaches the DLQ."""

from __future__ import annotations

import secrets
import time

import boto3
import pytest

from .conftest import start_runtime, stop_runtime
from .servers import start_moto, start_worker

pytestmark = pytest.mark.integration
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def sqs_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sqs")
    endpoint, moto = start_moto(tmp / "moto.log")
    env = {
        **AWS,
        "GPT_DATABASE_URL": f"sqlite:///{tmp / 'gpt.db'}",
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_QUEUE_URL": f"sqs://gpt-jobs?endpoint_url={endpoint}&visibility_timeout=1&max_receives=2",
        "GPT_WORKER_IN_PROCESS": "false",
        "GPT_MODEL_SOURCE": "fake:echo",
        "GPT_RATE_LIMIT_FREE": "10000",
    }
    api = start_runtime(tmp / "api", **env)
    worker = start_worker(tmp / "worker.log", env)
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield api, sqs
    worker.terminate()
    worker.wait(10)
    stop_runtime(api)
    moto.terminate()
    moto.wait(10)


def test_jobs_flow_through_sqs_to_a_worker(sqs_stack):
    api, sqs = sqs_stack
    with api.client(api.signup_and_login()) as client:
        accepted = client.post("/generate", json={"prompt": "via sqs", "async": True})
        assert accepted.status_code == 202
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] == "succeeded":
                break
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        assert job["result"]["content"] == "You said: via sqs"
        messages = client.get(f"/conversations/{job['conversation_id']}").json()["messages"]
        assert [m["content"] for m in messages] == ["via sqs", "You said: via sqs"]
    queue_url = sqs.get_queue_url(QueueName="gpt-jobs")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"  # acknowledged, not left behind


def test_a_poison_message_is_redriven_to_the_dlq(sqs_stack):
    _, sqs = sqs_stack
    queue_url = sqs.get_queue_url(QueueName="gpt-jobs")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName="gpt-jobs-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"job_id": "ghost", "user_id": "nobody"}')
    deadline = time.monotonic() + 30
    dead: list[str] = []
    while time.monotonic() < deadline and not dead:
        response = sqs.receive_message(QueueUrl=dlq_url, VisibilityTimeout=0, WaitTimeSeconds=1)
        dead = [m["Body"] for m in response.get("Messages", [])]
    assert dead == ['{"job_id": "ghost", "user_id": "nobody"}']
