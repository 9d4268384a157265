"""A real S3-compatible server for tests: moto's standalone server on a free loopback port.

Code under test talks to it over HTTP exactly as it would to S3, configured only through the
environment variables a user sets for MinIO & co. (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

BUCKET = "corpus"


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]
    """What a user would export to point every process (driver, Ray workers) at this server."""
    fs: pafs.S3FileSystem

    def put(self, key: str, data: bytes) -> str:
        """Upload ``data`` to ``BUCKET/key``; returns its s3:// URI."""
        with self.fs.open_output_stream(f"{BUCKET}/{key}") as f:
            f.write(data)
        return f"s3://{BUCKET}/{key}"

    def keys(self, prefix: str) -> list[str]:
        """Object keys below ``prefix``, relative to it."""
        root = f"{BUCKET}/{prefix}/"
        infos = self.fs.get_file_info(pafs.FileSelector(root, recursive=True))
        return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(log_path: Path, timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Start the server with bucket ``BUCKET``, yield it, and always stop it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    opener.open(f"{endpoint}/moto-api/", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"moto server did not start on {endpoint}") from None
                    time.sleep(0.2)
            env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true"}
            fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing",
                                   secret_key="testing", region="us-east-1",
                                   allow_bucket_creation=True)
            fs.create_dir(BUCKET)
            yield S3Server(endpoint, env, fs)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
