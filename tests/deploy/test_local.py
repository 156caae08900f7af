"""`itsacat deploy --target local`: real processes, real HTTP on 127.0.0.1.

Clients keep sending photos to the stable port while the model changes under them; every
answer must be a 200 from one model or the other, and after the switch only from the new
one. A broken model or a failing smoke test must leave the old model serving.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import free_port
from itsacat.cli import main as cli_main
from itsacat.config import Params, params_from_dict
from itsacat.deploy import local
from itsacat.deploy.common import DeployError
from itsacat.deploy.local import deploy_local, endpoint_status, pid_alive, stop_endpoint
from itsacat.deploy.smoke import SmokeReport, SmokeResult
from itsacat.serve.process import ServerProcess

from .conftest import answers


def small_jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def params(tmp_path: Path, photos: list[Path]) -> Iterator[Params]:
    p = params_from_dict(
        {
            "deploy": {
                "smoke": {"photos": [str(photos[0])], "max_photos": 1},
                "local": {
                    "port": free_port(),
                    "state_dir": str(tmp_path / "endpoint"),
                    "workers": 1,
                    "drain_timeout_s": 10,
                },
            }
        }
    )
    yield p
    stop_endpoint(p)


class Client(threading.Thread):
    """Sends a small JPEG to the endpoint again and again over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        body = small_jpeg()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stopped.is_set():
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    self.errors.append(f"HTTP {response.status}: {data[:100]!r}")
                else:
                    self.versions.append(json.loads(data)["model_version"])
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def finish(self) -> None:
        self.stopped.set()
        self.join(30)


def version_of(model: Path) -> str:
    return json.loads((model / "model.json").read_text())["version"]


def ask(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/invocations", small_jpeg(), {"Content-Type": "image/jpeg"})
    answer = conn.getresponse()
    assert answer.status == 200
    return dict(json.loads(answer.read()))


def test_first_deploy_serves_through_the_stable_port(params, model_a, photos):
    result = deploy_local(model_a, params)
    assert result.outcome == "deployed"
    port = params.deploy.local.port
    assert ask(port)["model_version"] == version_of(model_a)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/invocations", photos[0].read_bytes(), {"Content-Type": "image/jpeg"})
    assert json.loads(conn.getresponse().read()) == answers(model_a, photos[:1])[0]
    status = endpoint_status(params)
    assert status["proxy_alive"] and status["backend_alive"]
    assert status["version"] == version_of(model_a)


def test_switch_under_load_drops_no_request(params, model_a, model_b):
    first = deploy_local(model_a, params)
    clients = [Client(params.deploy.local.port) for _ in range(3)]
    for c in clients:
        c.start()
    time.sleep(0.5)
    second = deploy_local(model_b, params)
    time.sleep(0.5)
    for c in clients:
        c.finish()
    a, b = version_of(model_a), version_of(model_b)
    for c in clients:
        assert c.errors == []
        assert set(c.versions) == {a, b}
        switched = c.versions.index(b)
        assert set(c.versions[switched:]) == {b}, "after the switch only the new model answers"
    assert second.outcome == "deployed" and second.details["previous"] == a
    assert not pid_alive(first.details["backend"]["pid"]), "the old backend was stopped"
    print(f"requests during the switch: {sum(len(c.versions) for c in clients)}, errors: 0")


def test_broken_model_leaves_the_old_one_serving(params, model_a, model_b, tmp_path):
    deploy_local(model_a, params)
    broken = tmp_path / "broken"
    shutil.copytree(model_b, broken)
    (weights,) = broken.glob("weights-*.npz")
    weights.write_bytes(b"not a numpy archive")
    client = Client(params.deploy.local.port)
    client.start()
    with pytest.raises(DeployError, match=f"did not start.*model {version_of(model_a)} keeps"):
        deploy_local(broken, params)
    time.sleep(0.3)
    client.finish()
    assert client.errors == []
    assert set(client.versions) == {version_of(model_a)}
    status = endpoint_status(params)
    assert status["version"] == version_of(model_a) and status["backend_alive"]


def test_failed_smoke_test_leaves_the_old_one_serving(params, model_a, model_b, photos):
    deploy_local(model_a, params)
    said = answers(model_b, photos[:1])[0]["label"]
    strict = params_from_dict(
        {
            "deploy": {
                "smoke": {
                    "photos": [str(photos[0])],
                    "expect": {photos[0].name: "non-cat" if said == "cat" else "cat"},
                },
                "local": {
                    "port": params.deploy.local.port,
                    "state_dir": params.deploy.local.state_dir,
                    "workers": 1,
                },
            }
        }
    )
    with pytest.raises(DeployError, match=f"labelled {said}.*keeps serving"):
        deploy_local(model_b, strict)
    assert ask(params.deploy.local.port)["model_version"] == version_of(model_a)
    backends = json.loads((Path(params.deploy.local.state_dir) / "state.json").read_text())
    assert backends["active"]["version"] == version_of(model_a)


def test_repeated_deploy_changes_nothing(params, model_a):
    first = deploy_local(model_a, params)
    again = deploy_local(model_a, params)
    assert again.outcome == "unchanged"
    assert again.details["backend"]["pid"] == first.details["backend"]["pid"]


def test_stop_frees_the_port(params, model_a):
    result = deploy_local(model_a, params)
    stopped = stop_endpoint(params)
    assert len(stopped) == 2
    assert not pid_alive(result.details["backend"]["pid"])
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", params.deploy.local.port, timeout=2).connect()


def cli_params(params: Params, folder: Path) -> Path:
    """A params file for the CLI with the test's photos, port and state folder."""
    local = params.deploy.local
    path = folder / "params.yaml"
    deploy = {
        "smoke": {"photos": list(params.deploy.smoke.photos)},
        "local": {"port": local.port, "state_dir": local.state_dir, "workers": 1},
    }
    path.write_text(json.dumps({"deploy": deploy}))
    return path


def test_cli_deploy_status_stop(params, model_a, tmp_path, capsys):
    args = ["--params", str(cli_params(params, tmp_path))]
    assert cli_main(["endpoint", "status", *args]) == 0
    assert capsys.readouterr().out == "local: nothing deployed\n"  # not a list of Nones
    assert cli_main(["deploy", "--model-dir", str(model_a), *args]) == 0
    assert cli_main(["endpoint", "status", *args]) == 0
    out = capsys.readouterr().out
    assert version_of(model_a) in out and f":{params.deploy.local.port}" in out
    active = json.loads((Path(params.deploy.local.state_dir) / "state.json").read_text())["active"]
    backend = ", ".join(f"{k} {v}" for k, v in active.items())  # pid, port, version, …
    assert f"backend: {backend}\n" in out and f"version {active['version']}" in backend, out
    assert "{" not in out, "a raw dict was printed"
    assert cli_main(["endpoint", "status", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == active
    assert cli_main(["endpoint", "stop", *args]) == 0
    assert "stopped" in capsys.readouterr().out
    assert cli_main(["endpoint", "status", *args]) == 0
    assert capsys.readouterr().out == "local: nothing deployed\n"


def write_stale_state(params: Params, pids: list[int]) -> None:
    """A state.json whose pids now belong to other programs (as after a reboot)."""
    folder = Path(params.deploy.local.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    proxy = {"pid": pids[0], "host": "127.0.0.1", "port": params.deploy.local.port}
    active = {"pid": pids[1], "port": free_port(), "version": "0123456789abcdef"}
    state = {"proxy": proxy, "active": active, "previous": None}
    (folder / "state.json").write_text(json.dumps(state))


def test_stale_pids_in_the_state_are_never_signalled(params, model_a):
    others = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        write_stale_state(params, [p.pid for p in others])
        status = endpoint_status(params)
        assert not status["proxy_alive"] and not status["backend_alive"]
        assert stop_endpoint(params) == []
        write_stale_state(params, [p.pid for p in others])
        assert deploy_local(model_a, params).outcome == "deployed"
        assert ask(params.deploy.local.port)["model_version"] == version_of(model_a)
        stop_endpoint(params)
        assert [p.poll() for p in others] == [None, None], "another program was killed"
    finally:
        for p in others:
            p.kill()
            p.wait()


def interrupt(*args: Any, **kwargs: Any) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pid of every process a deploy starts; any a failed test leaves is stopped after."""
    pids: list[int] = []
    real = local._spawn

    def spawn(cmd: list[str], log_path: Path) -> Any:
        proc = real(cmd, log_path)
        pids.append(proc.pid)
        everything.append(proc.pid)
        return proc

    everything: list[int] = []  # the test may clear `pids`
    monkeypatch.setattr(local, "_spawn", spawn)
    yield pids
    for pid in everything:
        local.stop_pid(pid, 5)


def interrupt_deploy(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Ctrl-C while the new server starts, while it is smoke-tested, or once it is switched in."""
    if when == "starting":
        monkeypatch.setattr(ServerProcess, "wait_ready", interrupt)
    elif when == "smoke test":
        monkeypatch.setattr(local, "run_smoke", interrupt)
    else:  # the backend check passes, Ctrl-C comes while checking through the proxy
        checks = iter([local.run_smoke, interrupt])
        monkeypatch.setattr(local, "run_smoke", lambda *a: next(checks)(*a))


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as in a terminal, whatever this process inherited:
    a job a shell starts in the background (`make test &`) begins with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_first(real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, entered just as Ctrl-C is pressed again: a real SIGINT, as a terminal sends."""

    def again(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    return again


@pytest.mark.parametrize("when", ["starting", "smoke test", "switched"])
def test_interrupted_deploy_leaves_the_old_one_serving(
    params, model_a, model_b, spawned, monkeypatch, when
):
    first = deploy_local(model_a, params)
    spawned.clear()
    interrupt_deploy(monkeypatch, when)
    with pytest.raises(KeyboardInterrupt):
        deploy_local(model_b, params)
    assert len(spawned) == 1
    assert not pid_alive(spawned[0]), "the interrupted deploy's server outlived it"
    assert ask(params.deploy.local.port)["model_version"] == version_of(model_a)
    status = endpoint_status(params)
    assert status["version"] == version_of(model_a) and status["backend_alive"]
    assert status["backend"]["pid"] == first.details["backend"]["pid"]


@pytest.mark.parametrize(
    ("when", "again"),
    [
        ("starting", "stopping it"),
        ("smoke test", "stopping it"),
        ("switched", "routing back"),
        ("switched", "stopping it"),
    ],
)
def test_a_second_ctrl_c_during_the_cleanup_leaves_no_server_behind(
    params, model_a, model_b, spawned, monkeypatch, ctrl_c_raises, when, again
):
    first = deploy_local(model_a, params)
    spawned.clear()
    interrupt_deploy(monkeypatch, when)
    if again == "stopping it":
        monkeypatch.setattr(local, "stop_pid", ctrl_c_first(local.stop_pid))
    else:  # the first switch puts the new server in, the second routes back to the old one
        switches = iter([local._switch, ctrl_c_first(local._switch)])
        monkeypatch.setattr(local, "_switch", lambda *a: next(switches)(*a))
    with pytest.raises(KeyboardInterrupt):
        deploy_local(model_b, params)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C left ignored"
    assert len(spawned) == 1
    assert not pid_alive(spawned[0]), "the second Ctrl-C left the new server running"
    assert ask(params.deploy.local.port)["model_version"] == version_of(model_a)
    status = endpoint_status(params)
    assert status["backend"]["pid"] == first.details["backend"]["pid"] and status["backend_alive"]


def post(port: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/invocations", small_jpeg(), {"Content-Type": "image/jpeg"})
    answer = conn.getresponse()
    return answer.status, dict(json.loads(answer.read()))


@pytest.mark.parametrize("how", ["interrupted", "check through the proxy failed"])
def test_a_first_deploy_undone_after_the_switch_answers_nothing_deployed(
    params, model_a, spawned, monkeypatch, how
):
    failed = SmokeReport((SmokeResult("photo.jpg", False, "no answer: HTTP 502"),))
    then = interrupt if how == "interrupted" else lambda *a: failed
    checks = iter([local.run_smoke, then])
    monkeypatch.setattr(local, "run_smoke", lambda *a: next(checks)(*a))
    with pytest.raises(KeyboardInterrupt if how == "interrupted" else DeployError):
        deploy_local(model_a, params)
    proxy_pid, server_pid = spawned
    assert pid_alive(proxy_pid) and not pid_alive(server_pid)
    status, body = post(params.deploy.local.port)
    # what the proxy answers before the first deploy: nothing serves, and it says so
    assert (status, body["status"]) == (503, 503) and "run `itsacat deploy`" in body["error"]
    monkeypatch.undo()
    assert deploy_local(model_a, params).outcome == "deployed"
    assert ask(params.deploy.local.port)["model_version"] == version_of(model_a)


def test_interrupted_first_deploy_leaves_no_proxy(params, model_a, spawned, monkeypatch):
    monkeypatch.setattr(local, "_proxy_status", interrupt)
    with pytest.raises(KeyboardInterrupt):
        deploy_local(model_a, params)
    assert len(spawned) == 1 and not pid_alive(spawned[0])
    monkeypatch.undo()
    assert deploy_local(model_a, params).outcome == "deployed"


def test_a_port_in_use_is_one_error_line(params, model_a, tmp_path, capsys):
    local = params.deploy.local
    yaml = tmp_path / "params.yaml"
    yaml.write_text(
        json.dumps({"deploy": {"local": {"port": local.port, "state_dir": local.state_dir}}})
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", local.port))
        taken.listen()
        assert cli_main(["deploy", "--model-dir", str(model_a), "--params", str(yaml)]) == 1
    err = capsys.readouterr().err
    assert err.count("itsacat: error:") == 1, err
    assert str(local.port) in err


def test_a_port_in_use_shows_only_this_start_in_the_error(params, model_a, tmp_path, capsys):
    port = params.deploy.local.port
    logs = Path(params.deploy.local.state_dir) / "logs"
    logs.mkdir(parents=True)
    stale = [
        "2026-11-26 09:55:00,364 __main__ switched to Backend(port=53791, version='stale1')",
        "2026-11-26 09:55:01,000 __main__ proxy on http://127.0.0.1:1, control stale2",
        "itsacat: error: stale3 from an earlier run",
    ]
    (logs / "proxy.log").write_text("\n".join(stale) + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        args = ["--model-dir", str(model_a), "--params", str(cli_params(params, tmp_path))]
        assert cli_main(["deploy", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("itsacat: error: "), err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "deploy.local.port" in err, err
    assert not re.search("stale|Backend|__main__", err), err


def test_a_model_copy_interrupted_halfway_leaves_no_temporary_folder(params, model_a, monkeypatch):
    real, copied = shutil.copytree, []

    def copy_then_interrupt(src: str, dst: str, **kw: Any) -> Any:
        def one_file(s: str, d: str) -> None:
            if copied:
                raise KeyboardInterrupt
            copied.append(shutil.copy2(s, d))

        return real(src, dst, copy_function=one_file)

    monkeypatch.setattr(local.shutil, "copytree", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        deploy_local(model_a, params)
    assert copied, "the copy was under way"
    models = local.state_dir(params) / "models"
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    assert deploy_local(model_a, params).outcome == "deployed"
    stop_endpoint(params)


def test_a_deleted_state_file_adopts_the_running_endpoint(params, model_a, model_b):
    first = deploy_local(model_a, params)
    folder = local.state_dir(params)
    proxy_pid = json.loads((folder / "state.json").read_text())["proxy"]["pid"]
    old_pid = first.details["backend"]["pid"]
    (folder / "state.json").unlink()
    try:
        assert endpoint_status(params)["proxy_alive"], "status does not see the running proxy"
        client = Client(params.deploy.local.port)
        client.start()
        second = deploy_local(model_b, params)
        client.finish()
        assert second.outcome == "deployed" and second.details["previous"] == version_of(model_a)
        assert client.errors == [] and client.versions[-1] == version_of(model_b)
        assert not pid_alive(old_pid), "model A's server was left running, recorded nowhere"
        status = endpoint_status(params)
        assert status["proxy_alive"] and status["version"] == version_of(model_b)
        stop_endpoint(params)
        assert not pid_alive(proxy_pid), "`endpoint stop` did not stop the adopted proxy"
    finally:
        for pid in (proxy_pid, old_pid):
            local.stop_pid(pid, 5)


def test_an_unreachable_proxy_on_the_port_is_named_in_one_line(params, model_a, tmp_path, capsys):
    lp = params.deploy.local
    first = deploy_local(model_a, params)
    folder = local.state_dir(params)
    proxy_pid = json.loads((folder / "state.json").read_text())["proxy"]["pid"]
    pids = [proxy_pid, first.details["backend"]["pid"]]
    (folder / "state.json").unlink()
    (folder / "control.sock").unlink()  # nothing left to ask the proxy what it serves
    yaml = cli_params(params, tmp_path)
    try:
        assert cli_main(["deploy", "--model-dir", str(model_a), "--params", str(yaml)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("itsacat: error:"), err
        command = re.search(r"`kill ([\d ]+)`", err)
        assert command and sorted(map(int, command[1].split())) == sorted(pids), err
        subprocess.run(["kill", *command[1].split()], check=True)
        deadline = time.monotonic() + 15
        while any(pid_alive(pid) for pid in pids):  # pid_alive reaps them: they are our children
            assert time.monotonic() < deadline, "the command given did not stop them"
            time.sleep(0.05)
        assert cli_main(["deploy", "--model-dir", str(model_a), "--params", str(yaml)]) == 0
        assert ask(lp.port)["model_version"] == version_of(model_a)
    finally:
        for pid in pids:
            local.stop_pid(pid, 5)
