"""Exposure: an embedded Ray listens on loopback only and dies with its driver; terminal output
carries no control characters from metadata and no credentials from URIs."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from soundclust_ray import ray_env
from soundclust_ray.cli import main, print_summary
from soundclust_ray.terminal import redact_uri, safe_json, safe_line, strip_control

REPO = Path(__file__).resolve().parents[1]
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Every character a terminal may act on, newline and tab excepted."""

# --------------------------------------------------------------------------- strip_control


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x1b[31mred\x1b[0m b", "ared b"),  # SGR colour
        ("x\x1b[2J\x1b[1;1Hy", "xy"),  # clear screen, cursor home
        ("cr\rover", "crover"),  # carriage return rewrites the line
        ("t\x1b]0;pwned\x07u", "tu"),  # OSC window title, BEL-terminated
        ("t\x1b]8;;http://e.x\x1b\\link\x1b]8;;\x1b\\u", "tlinku"),  # OSC 8 hyperlink, ST
        ("a\x9b31mb", "ab"),  # 8-bit CSI
        ("a\x9d0;t\x9cb", "ab"),  # 8-bit OSC, 8-bit ST
        ("a\x1bPq#0;2\x1b\\b", "ab"),  # DCS (sixel)
        ("a\x1b(0b", "ab"),  # charset switch
        ("a\x1bcb", "ab"),  # RIS full reset
        ("a\x1b]unterminated", "aunterminated"),  # a stray introducer only
        ("end\x1b", "end"),
        ("nul\x00bel\x07bs\x08del\x7f", "nulbelbsdel"),
        ("evil\u202ev4w.exe", "evilv4w.exe"),  # bidi override
        ("keep\ttab\nand newline", "keep\ttab\nand newline"),
        ("Björk — Jóga ♪ 日本", "Björk — Jóga ♪ 日本"),
    ],
)
def test_strip_control(raw, shown):
    assert strip_control(raw) == shown


def test_strip_control_leaves_nothing_a_terminal_acts_on():
    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in range(0, 0xA0)] + ["\u202e", "\u2066", "é", "[", ";", "\\"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        out = strip_control(text)
        assert not UNSAFE.search(out), repr(text)
        assert strip_control(out) == out


def test_strip_control_takes_any_object():
    assert strip_control(ValueError("id\x1b[1m")) == "id"
    assert strip_control(12) == "12"


# --------------------------------------------------------------------------- redact_uri


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("s3://AKIA:SECRET@bucket/x", "s3://AKIA:***@bucket/x"),
        ("to s3://AKIA:wJal/rXU+tn@bucket/x, done", "to s3://AKIA:***@bucket/x, done"),
        ("gs://u:p@ss@host/o", "gs://u:***@host/o"),
        ("https://:tok@h/p", "https://:***@h/p"),
        (
            "https://b.s3.amazonaws.com/k.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1&X-Amz-Signature=ab12&x-id=GetObject",
            "https://b.s3.amazonaws.com/k.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=***&X-Amz-Signature=***&x-id=GetObject",
        ),
        (
            "http://h/k?AWSAccessKeyId=AKIA&Expires=1&Signature=zz%3D",
            "http://h/k?AWSAccessKeyId=***&Expires=1&Signature=***",
        ),
        ("https://acct.blob/c/b?sv=1&sig=abc#frag", "https://acct.blob/c/b?sv=1&sig=***#frag"),
        ("db://h/x?TOKEN=t1;password=p2", "db://h/x?TOKEN=***;password=***"),
        ("s3://b/x?access_key=A&secret_key=S", "s3://b/x?access_key=***&secret_key=***"),
        ("'s3://k:v@b/x' and \"gs://k2:v2@c\"", "'s3://k:***@b/x' and \"gs://k2:***@c\""),
    ],
)
def test_redact_uri(raw, shown):
    assert redact_uri(raw) == shown


@pytest.mark.parametrize(
    "text",
    [
        "/data/music/a@b.wav",
        "s3://bucket/a@b.wav",
        "http://localhost:9000/bucket/x.wav",
        "sftp://alice@host/x",  # a user name alone is no secret
        "see errors.parquet; signal=3 designation=x",
        "https://h/p?signature_version=4&tokens=2",  # names that only start like a secret
        "ratio 3:2 at 10:30 @ noon",
    ],
)
def test_redact_uri_leaves_text_without_credentials(text):
    assert redact_uri(text) == text


def test_safe_line_strips_then_redacts():
    # an escape sequence inside the URI must not hide the secret from the redaction
    assert safe_line("s3://AKIA:SEC\x1b[0mRET@bucket/x\r") == "s3://AKIA:***@bucket/x"


def test_safe_json_keeps_the_document_and_its_values():
    doc = json.dumps({"id": "a\x9bb\u202ec\x1b[31m", "p": "s3://k:v@b/x"}, ensure_ascii=False)
    out = safe_json(doc)
    assert not UNSAFE.search(out)
    assert json.loads(out) == {"id": "a\x9bb\u202ec\x1b[31m", "p": "s3://k:***@b/x"}


# --------------------------------------------------------------------------- the CLI

HOSTILE_IDS = ["evil\x1b[31mred\x1b[0m", "cr\rover", "bell\x07\x9b2J", "osc\x1b]0;pwned\x07"]


@pytest.fixture()
def hostile_table(tmp_path) -> Path:
    """A tabular source whose ids and titles hold escape sequences (Parquet keeps them exact)."""
    rng = np.random.default_rng(0)
    n = 24
    df = pd.DataFrame({c: rng.random(n) for c in ["danceability", "energy", "valence", "tempo"]})
    df["id"] = HOSTILE_IDS + [f"t{i:02d}" for i in range(len(HOSTILE_IDS), n)]
    df["title"] = [f"song\x1b]2;title\x07{i}\r" for i in range(n)]
    path = tmp_path / "hostile.parquet"
    df.to_parquet(path)
    return path


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_metadata_control_characters_never_reach_the_terminal(hostile_table, tmp_path):
    out = str(tmp_path / "out")
    code, stdout, stderr = cli(
        ["run", str(hostile_table), "--source", "tabular", "--out", out, "--no-analysis"]
    )
    assert code == 0, stderr
    printed = [stdout, stderr]
    for track in HOSTILE_IDS:
        for extra in ([], ["--json"]):
            code, stdout, stderr = cli(["similar", out, "--id", track, "--k", "30", *extra])
            assert code == 0, stderr
            printed += [stdout, stderr]
            if not extra:  # every id and title of the table is listed
                assert strip_control(HOSTILE_IDS[1]) in stdout or track == HOSTILE_IDS[1]
            else:  # the JSON keeps the exact values
                neighbours = json.loads(stdout)["neighbours"]
                assert {n["track_id"] for n in neighbours} >= set(HOSTILE_IDS) - {track}
    code, stdout, stderr = cli(["similar", out, "--id", "nope\x1b[31m\r"])
    assert code == 2 and "nope" in stderr
    printed += [stdout, stderr]
    for text in printed:
        assert not UNSAFE.search(text), repr(text)


def test_a_credential_in_out_is_never_printed(hostile_table, tmp_path, monkeypatch):
    """A real run into the loopback S3 server with the key and secret in the OUT URI."""
    monkeypatch.chdir(tmp_path)  # the run keeps its Ray log under a local "<bucket>/<key>/logs"
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from s3_server import s3_server

    with s3_server(tmp_path / "moto.log") as server:
        host = server.endpoint.removeprefix("http://")
        out = f"s3://AKIAUSER:TopSecret42@corpus/x?scheme=http&endpoint_override={host}"
        code, stdout, stderr = cli(
            ["run", str(hostile_table), "--source", "tabular", "--out", out, "--no-analysis"]
        )
        assert code == 0, stderr
        assert "s3://AKIAUSER:***@corpus/x" in stdout  # the summary names OUT, redacted
        code2, stdout2, stderr2 = cli(["similar", out, "--id", "missing"])
        assert code2 == 2
    for text in (stdout, stderr, stdout2, stderr2):
        assert "TopSecret42" not in text


def test_summary_and_errors_redact_and_strip(capsys, monkeypatch):
    from soundclust_ray import outdir

    monkeypatch.setattr(outdir, "exists", lambda out, name: True)  # lists every output
    info = {"products": {}, "n_failed": 0}
    print_summary("s3://AKIA:SECRET@bucket/x\x1b[2J", info, None, 1.0)
    code = main(["similar", "foo://AKIA:SECRET@host/x\r", "--id", "x"])  # pyarrow quotes it
    captured = capsys.readouterr()
    assert code == 2
    assert "SECRET" not in captured.out + captured.err
    assert "s3://AKIA:***@bucket/x" in captured.out
    assert not UNSAFE.search(captured.out + captured.err)


# --------------------------------------------------------------------------- Ray start-up


def test_embedded_start_keeps_the_node_on_loopback_and_restores_the_process(monkeypatch):
    import ray
    from ray._private import ray_constants

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        seen["env"] = os.environ.get(ray_env.SINGLE_NODE_ENV)
        seen["flag"] = ray_constants.ENABLE_RAY_CLUSTER

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray_env, "start_reaper", lambda: None)
    monkeypatch.setattr(ray_env, "configure_data_context", lambda verbose: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_env.SINGLE_NODE_ENV, raising=False)
    flag = ray_constants.ENABLE_RAY_CLUSTER

    ray_env.init_ray(num_cpus=1)
    assert (seen["address"], seen["_node_ip_address"]) == ("local", "127.0.0.1")
    assert (seen["env"], seen["flag"]) == ("0", False)
    assert ray_env.SINGLE_NODE_ENV not in os.environ
    assert flag == ray_constants.ENABLE_RAY_CLUSTER

    seen.clear()
    ray_env.init_ray(address="10.0.0.5:6379")  # joining a cluster: nothing of the above
    assert seen["address"] == "10.0.0.5:6379" and "_node_ip_address" not in seen
    assert (seen["env"], seen["flag"]) == (None, flag)


DRIVER = textwrap.dedent(
    """
    import os, sys
    from soundclust_ray.ray_env import init_ray
    init_ray(num_cpus=1)
    import ray

    @ray.remote
    def task():
        return os.getpid()

    @ray.remote
    class Actor:
        def pid(self):
            return os.getpid()

    actor = Actor.remote()
    ray.get([task.remote(), actor.pid.remote()])
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def exposed(sockets: dict[tuple[str, int], str]) -> dict[str, str]:
    return {f"{ip}:{port}": who for (ip, port), who in sockets.items() if not is_loopback(ip)}


def family(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    """(ip, port) → process name for every TCP LISTEN socket of ``processes``."""
    found = {}
    for p in processes:
        try:
            name = p.name()
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    found[(c.laddr.ip, c.laddr.port)] = f"{name} (pid {p.pid})"
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def ss_listening(pids: set[int]) -> dict[tuple[str, int], str]:
    """The same seen by ``ss -ltnpH`` (the issue's check), for the given pids."""
    found = {}
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            ip, _, port = local.rpartition(":")
            found[(ip.strip("[]"), int(port))] = line.split("users:")[-1]
    return found


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_embedded_ray_listens_on_loopback_only_and_dies_with_its_driver(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "driver.err", "wb"),  # noqa: SIM115
        env=env,
        cwd=tmp_path,
    )
    members: list[psutil.Process] = []
    try:
        assert proc.stdout.readline().strip() == b"ready", (tmp_path / "driver.err").read_text()
        driver = psutil.Process(proc.pid)
        sockets: dict[tuple[str, int], str] = {}
        ss_sockets: dict[tuple[str, int], str] = {}
        deadline = time.time() + 10  # agents and metrics endpoints open theirs a little later
        while time.time() < deadline:
            members = family(driver)
            sockets.update(listening(members))
            if shutil.which("ss"):
                ss_sockets.update(ss_listening({p.pid for p in members}))
            time.sleep(1)
        names = {p.name() for p in members if p.is_running()}
        assert {"gcs_server", "raylet"} <= names, names
        assert len(sockets) >= 5, sockets  # GCS, raylet (x2), driver, worker, agents ...
        assert exposed(sockets) == {}
        assert exposed(ss_sockets) == {}

        proc.kill()  # SIGKILL: no exit handler runs; the reaper must stop Ray's daemons
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in members[1:]):
            time.sleep(0.5)
        left = [f"{p.name()} (pid {p.pid})" for p in members[1:] if _alive(p)]
        assert left == []
        still_open = set(listening(members[1:])) & set(sockets)
        assert still_open == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in members[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_is_one_line_and_other_crashes_are_not_hidden(monkeypatch, capsys):
    import errno

    from soundclust_ray.analysis import search

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("UDF failed to process a data block.") from exc

    monkeypatch.setattr(search, "similar_tracks", full)
    assert main(["similar", "s3://k:SECRET@b/out", "--id", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: no space left on the device holding s3://k:***@b/out; "
        "free some space and rerun the same command to resume"
    ]

    def quoted(*args, **kwargs):  # Ray may carry the worker's error only as text
        raise RuntimeError("ray::ShardWriter ... OSError: [Errno 28] Error writing bytes")

    monkeypatch.setattr(search, "similar_tracks", quoted)
    assert main(["similar", "/tmp/out", "--id", "x"]) == 2

    def other(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(search, "similar_tracks", other)
    capsys.readouterr()
    assert main(["similar", "/tmp/out", "--id", "x"]) == 1  # a bug: its whole traceback
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: a bug" in err


def test_a_crash_traceback_never_shows_a_uri_secret(monkeypatch, capsys):
    from soundclust_ray.analysis import search

    def crash(*args, **kwargs):
        raise RuntimeError("cannot read s3://AKIAUSER:TopSecret42@bucket/x?X-Amz-Signature=abc")

    monkeypatch.setattr(search, "similar_tracks", crash)
    assert main(["similar", "/tmp/out", "--id", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TopSecret42" not in err and "Signature=abc" not in err
