"""Blue/green on one machine: the local endpoint, switched to a new model without a dropped request.

    deploy_local(Path("model"), params)     # what `itsacat deploy --target local` runs
    endpoint_status(params)                 # `itsacat endpoint status`
    stop_endpoint(params)                   # `itsacat endpoint stop`

Layout (all under `deploy.local.state_dir`, default `.itsacat/endpoint/`):

    state.json            which proxy and which backend (pid, port, model version) are live
    control.sock          the proxy's control socket (owner-only)
    models/<version>/     a snapshot of each deployed model: `dvc repro` rewriting model/
                          never touches what is serving, and the previous one stays for rollback
    logs/                 the proxy's and each backend's output

A deploy: snapshot the model; start `itsacat serve` on it on a free private port; wait for
/ping; smoke-test it directly with real photos; tell the proxy on the stable port to send
new requests to it and to wait until the old backend's requests have finished; check one
photo through the proxy; write state.json (atomically); SIGTERM the old backend, which
finishes anything still in flight and exits. A new backend that does not start, or fails
the smoke test, is stopped, and the old one never stops serving; a first deploy undone after
its switch leaves the proxy answering 503 (nothing deployed), as before it. A Ctrl-C stops the
deploy, and the cleanup it starts runs to its end even if Ctrl-C comes again.

If state.json is lost while the endpoint runs, the next deploy, status or stop adopts the
proxy that answers on control.sock and the backend it routes to (each checked by its command
line, as a recorded one is), rather than failing to start a second proxy on a taken port.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from itsacat.config import LocalDeployParams, Params
from itsacat.deploy.common import DeployError, DeployResult, model_version
from itsacat.deploy.proxy import control
from itsacat.deploy.smoke import Invoke, run_smoke, select_cases
from itsacat.errors import ItsacatError
from itsacat.fileio import atomic_write_text
from itsacat.interrupts import finishing

log = logging.getLogger(__name__)

STATE = "state.json"
CONTROL = "control.sock"
PROXY_MODULE = "itsacat.deploy.proxy"
SERVER_MODULE = "itsacat.serve.server"


def state_dir(params: Params, base: Path = Path(".")) -> Path:
    return (base / params.deploy.local.state_dir).resolve()


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(
            f"{path} is unreadable ({exc}); stop the endpoint by hand (see its pids in "
            f"{folder / 'logs'}) and delete the file"
        ) from None
    return state


def write_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_text(folder / STATE, json.dumps(state, indent=2) + "\n")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One deploy or stop at a time per state folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeployError(
                f"another deploy or stop is running on {folder}; wait for it to finish"
            ) from None
        yield


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> list[str]:
    """The arguments `pid` runs with ([] when unreadable): /proc on Linux, `ps` elsewhere."""
    if Path("/proc/self/cmdline").exists():
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return []
    ps = ["ps", "-ww", "-o", "args=", "-p", str(pid)]
    return subprocess.run(ps, capture_output=True, text=True, check=False).stdout.split()


def ours(record: dict[str, Any] | None, module: str) -> bool:
    """Whether the process `record` (from state.json) names still runs, as the one we started.

    A pid in an old state.json (the endpoint died, the machine rebooted) may belong to
    another program by now: it must never be signalled, so the command line must still be
    `module` on the recorded port.
    """
    if not record or not pid_alive(record.get("pid")):
        return False
    args = _cmdline(int(record["pid"]))
    return module in args and _arg(args, "--port") == str(record.get("port"))


def _arg(args: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line; None without one."""
    return next((b for a, b in itertools.pairwise(args) if a == flag), None)


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Every other process in sight, with its arguments: /proc on Linux, `ps` elsewhere."""
    if Path("/proc/self/cmdline").exists():
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        yield from ((pid, _cmdline(pid)) for pid in pids if pid != os.getpid())
        return
    ps = ["ps", "-A", "-ww", "-o", "pid=,args="]
    for line in subprocess.run(ps, capture_output=True, text=True, check=False).stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit() and int(pid) != os.getpid():
            yield int(pid), args.split()


def _running(module: str, port: int) -> list[int]:
    """The pids running `module` on `port`: the command line ours() checks, found unrecorded."""
    return [
        pid for pid, args in _processes() if module in args and _arg(args, "--port") == str(port)
    ]


def stop_pid(pid: int | None, timeout: float) -> None:
    """SIGTERM, wait for a graceful exit, SIGKILL after `timeout`."""
    if not pid_alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            log.warning("pid %d did not stop in %.0f s; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def ping(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _proxy_status(folder: Path) -> dict[str, Any] | None:
    try:
        answer = control(folder / CONTROL, {"op": "status"}, timeout=5)
    except (OSError, ValueError):
        return None
    return answer if answer.get("ok") else None


def _log_size(path: Path) -> int:
    """Where the next child appending to `path` starts writing (0 for no log yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_tail(path: Path, since: int = 0, lines: int = 3) -> str:
    """The last lines a child wrote to its log from byte `since` on (what _log_size said
    before it started: the log is appended to, and an earlier run's lines are no cause of
    this failure), on one line, without the child's own "itsacat: error:" prefix (the
    message that quotes them gets that prefix once, when printed)."""
    try:
        with open(path, "rb") as f:
            if since <= os.fstat(f.fileno()).st_size:  # else truncated since: all of it is new
                f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    tail = text.strip().splitlines()[-lines:]
    return " | ".join(t.strip().removeprefix("itsacat: error: ") for t in tail)


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A detached child (its own session) that outlives this command."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),
        )


def _ensure_proxy(folder: Path, lp: LocalDeployParams, state: dict[str, Any]) -> dict[str, Any]:
    proxy = state.get("proxy") or {}
    if ours(proxy, PROXY_MODULE) and _proxy_status(folder) is not None:
        if (proxy.get("host"), proxy.get("port")) != (lp.host, lp.port):
            raise DeployError(
                f"the local endpoint's proxy listens on {proxy.get('host')}:{proxy.get('port')}, "
                f"but deploy.local says {lp.host}:{lp.port}; run `itsacat endpoint stop` first"
            )
        return dict(proxy)
    log_path = folder / "logs" / "proxy.log"
    cmd = [sys.executable, "-m", PROXY_MODULE, "--host", lp.host]
    cmd += ["--port", str(lp.port), "--control", str(folder / CONTROL)]
    if len(str(folder / CONTROL)) > 100:
        raise DeployError(
            f"deploy.local.state_dir {folder} is too long a path for a Unix socket; "
            "choose a shorter one"
        )
    since = _log_size(log_path)
    proc = _spawn(cmd, log_path)
    deadline = time.monotonic() + 15
    try:
        while _proxy_status(folder) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_pid(proc.pid, 2)
                raise DeployError(
                    _port_holder(folder, lp.port)
                    or "the local endpoint's proxy did not start: "
                    f"{_log_tail(log_path, since) or 'no output'}"
                )
            time.sleep(0.05)
    except KeyboardInterrupt:  # not yet in state.json: it would hold the port, unstoppable
        with finishing(f"stopping the proxy just started (pid {proc.pid})", log):
            stop_pid(proc.pid, 2)
        raise
    log.info("started the proxy on http://%s:%d (pid %d)", lp.host, lp.port, proc.pid)
    return {"pid": proc.pid, "host": lp.host, "port": lp.port, "log": str(log_path)}


def _port_holder(folder: Path, port: int) -> str | None:
    """Why our proxy cannot have `port`, when an itsacat proxy that we cannot reach has it."""
    holders = _running(PROXY_MODULE, port)
    if not holders:
        return None
    control_path = _arg(_cmdline(holders[0]), "--control")
    if control_path != str(folder / CONTROL):
        return (
            f"port {port} is held by the local endpoint whose state is in "
            f"{Path(control_path or '?').parent} (proxy pid {holders[0]}); stop it with "
            f"`kill {holders[0]}`, or set deploy.local.port in params.yaml"
        )
    models = folder / "models"
    servers = [
        pid
        for pid, args in _processes()
        if SERVER_MODULE in args and Path(_arg(args, "--model-dir") or "/").parent == models
    ]
    return (
        f"port {port} is held by this endpoint's proxy (pid {holders[0]}), which no longer "
        f"answers on {folder / CONTROL}; stop it{' and its model servers' if servers else ''} "
        f"with `kill {' '.join(map(str, holders + servers))}`, then deploy again"
    )


def _adopt(folder: Path, state: dict[str, Any]) -> dict[str, Any]:
    """`state`, with the proxy answering on control.sock and its backend when it names no
    proxy (state.json was deleted while the endpoint ran).

    Only this folder's proxy listens on control.sock, and it tells its pid; that pid must
    still run our proxy module, and the backend's pid our server on the routed port, the
    checks ours() makes of a recorded pid. Adopting them keeps the endpoint serving through
    the next deploy, which then retires the old backend as usual; a second proxy could not
    get the port, and the running one, recorded nowhere, would be stopped by no one.
    """
    if state.get("proxy") or not (folder / CONTROL).exists():
        return state
    answer = _proxy_status(folder)
    if not answer or not isinstance(answer.get("pid"), int):
        return state
    args = _cmdline(answer["pid"])
    port = _arg(args, "--port") or ""
    if not (port.isdigit() and ours({"pid": answer["pid"], "port": port}, PROXY_MODULE)):
        return state
    proxy = {"pid": answer["pid"], "host": _arg(args, "--host"), "port": int(port)}
    proxy["log"] = str(folder / "logs" / "proxy.log")
    routed = answer.get("backend") or {}
    found = _running(SERVER_MODULE, routed["port"]) if routed and not state.get("active") else []
    active = None
    if found:
        active = {"pid": found[0], "port": routed["port"], "version": routed["version"]}
        active["model_dir"] = _arg(_cmdline(found[0]), "--model-dir")
        active["log"] = str(folder / "logs" / f"serve-{routed['version']}-{routed['port']}.log")
    log.warning(
        "%s names no proxy, but the endpoint runs: adopted its proxy (pid %d)%s",
        folder / STATE,
        proxy["pid"],
        f" and model {active['version']} (pid {active['pid']})" if active else "",
    )
    return {**state, "proxy": proxy, "active": active or state.get("active")}


def _snapshot(model_dir: Path, folder: Path, version: str) -> Path:
    """A private copy of the model, made atomically (copy aside, then one rename)."""
    dest = folder / "models" / version
    if (dest / "model.json").is_file():
        return dest
    tmp = folder / "models" / f".{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(model_dir, tmp)
    except BaseException:  # Ctrl-C or a full disk: no half copy left behind, named by no one
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _prune(folder: Path, keep: int, live: set[str]) -> None:
    snaps = sorted(
        (p for p in (folder / "models").iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in snaps[keep:]:
        if old.name not in live:
            shutil.rmtree(old, ignore_errors=True)


def _start_backend(
    snapshot: Path, version: str, lp: LocalDeployParams, folder: Path
) -> dict[str, Any]:
    from itsacat.serve.process import ServerProcess, free_port

    port = free_port()
    log_path = folder / "logs" / f"serve-{version}-{port}.log"
    cmd = [sys.executable, "-m", SERVER_MODULE, "--model-dir", str(snapshot)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if lp.workers:
        cmd += ["--workers", str(lp.workers)]
    since = _log_size(log_path)
    proc = _spawn(cmd, log_path)
    try:
        ServerProcess(proc, "127.0.0.1", port, log_path).wait_ready(lp.start_timeout_s)
    except ItsacatError as exc:
        stop_pid(proc.pid, 5)
        raise DeployError(
            f"the new model's server did not start ({exc}): {_log_tail(log_path, since)}"
        ) from None
    except KeyboardInterrupt:  # not yet in state.json: `endpoint stop` would never find it
        with finishing(f"stopping the new model's server (pid {proc.pid})", log):
            stop_pid(proc.pid, 5)
        raise
    return {
        "pid": proc.pid,
        "port": port,
        "version": version,
        "model_dir": str(snapshot),
        "log": str(log_path),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def http_invoker(port: int, timeout: float) -> Invoke:
    def invoke(body: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"HTTP {exc.code}: {exc.read()[:200]!r}") from None

    return invoke


def _switch(folder: Path, backend: dict[str, Any] | None, drain_timeout: float) -> bool:
    """Route the proxy to `backend`, or to none (it answers 503, nothing deployed)."""
    answer = control(
        folder / CONTROL,
        {
            "op": "switch",
            "port": backend and backend["port"],
            "version": backend and backend["version"],
            "drain_timeout": drain_timeout,
        },
        timeout=drain_timeout + 10,
    )
    if not answer.get("ok"):
        raise DeployError(f"the proxy refused the switch: {answer.get('error')}")
    return bool(answer.get("drained"))


def _history(state: dict[str, Any], version: str, outcome: str) -> list[dict[str, str]]:
    entry = {"version": version, "outcome": outcome, "at": datetime.now(timezone.utc).isoformat()}
    return [*state.get("history", []), entry][-20:]


def _abandon(
    folder: Path,
    new: dict[str, Any],
    switched: bool,
    old: dict[str, Any] | None,
    lp: LocalDeployParams,
    serving: str,
) -> None:
    """Undo a deploy interrupted (Ctrl-C) before state.json named `new`: if the switch had
    begun, the proxy goes back to `old` (or to no backend: a 503 says nothing is deployed,
    where a 502 would blame a server that was never meant to be there), and `new`, recorded
    nowhere, is stopped."""
    with finishing(
        f"undoing the deploy of model {new['version']} (its server is pid {new['pid']})", log
    ):
        if switched:
            try:
                _switch(folder, old, lp.drain_timeout_s)
            except (OSError, ValueError, DeployError) as exc:
                back = f"model {old['version']}" if old else "no backend"
                log.warning("could not route the proxy back to %s: %s", back, exc)
        stop_pid(new["pid"], lp.drain_timeout_s)
    log.warning(
        "deploy of model %s interrupted: stopped its server (pid %d); %s",
        new["version"],
        new["pid"],
        serving,
    )


def deploy_local(model_dir: Path, params: Params, base: Path = Path(".")) -> DeployResult:
    """Blue/green switch of the local endpoint to `model_dir`; see the module docstring."""
    from itsacat.deploy.aws_common import notify

    lp = params.deploy.local
    folder = state_dir(params, base)
    version = model_version(model_dir)
    cases = select_cases(params.deploy.smoke, base)
    url = f"http://{lp.host}:{lp.port}"
    with _locked(folder):
        state = _adopt(folder, read_state(folder))
        state["proxy"] = _ensure_proxy(folder, lp, state)
        write_state(folder, state)
        old = state.get("active")
        if old and not (ours(old, SERVER_MODULE) and ping(old["port"])):
            log.warning("the live backend (model %s, pid %s) is gone", old["version"], old["pid"])
            old = None
        routed = (_proxy_status(folder) or {}).get("backend") or {}
        if old and old["version"] == version:
            if routed.get("port") != old["port"]:  # a restarted proxy: route to it again
                _switch(folder, old, lp.drain_timeout_s)
            log.info("the local endpoint already serves model %s at %s", version, url)
            return DeployResult("local", "unchanged", version, url, {"backend": old})

        serving = f"model {old['version']} keeps serving" if old else "nothing was serving"
        snapshot = _snapshot(model_dir, folder, version)
        try:
            new = _start_backend(snapshot, version, lp, folder)
        except DeployError as exc:
            state["history"] = _history(state, version, "did not start")
            write_state(folder, state)
            notify(params, "rollback", f"itsacat local: {exc}; {serving}", target="local")
            raise DeployError(f"{exc}; {serving}") from None
        switching = False
        try:
            timeout = params.deploy.smoke.timeout_s
            report = run_smoke(http_invoker(new["port"], timeout), cases, version)
            if not report.ok:
                stop_pid(new["pid"], lp.drain_timeout_s)
                message = f"smoke test of model {version} failed: {report.first_problem()}; "
                message += serving
                state["history"] = _history(state, version, "smoke test failed")
                write_state(folder, state)
                notify(params, "rollback", f"itsacat local: {message}", target="local")
                raise DeployError(message + "\n" + report.summary())

            switching = True
            drained = _switch(folder, new, lp.drain_timeout_s)
            through = run_smoke(http_invoker(lp.port, timeout), cases[:1], version)
            if not through.ok:
                _switch(folder, old, lp.drain_timeout_s)  # no old: no backend, a 503
                stop_pid(new["pid"], lp.drain_timeout_s)
                raise DeployError(
                    f"the proxy on {url} does not reach the new model "
                    f"({through.first_problem()}); "
                    f"{'switched back to ' + old['version'] if old else 'nothing serves'}"
                )
        except KeyboardInterrupt:
            _abandon(folder, new, switching, old, lp, serving)
            raise
        state.update(
            active=new,
            previous=old,
            history=_history(state, version, "deployed"),
        )
        write_state(folder, state)
        if old:
            if not drained:
                log.warning("old backend still had requests after %.0f s", lp.drain_timeout_s)
            stop_pid(old["pid"], lp.drain_timeout_s)
        _prune(folder, lp.keep_models, {version, *([old["version"]] if old else [])})
    result = DeployResult(
        "local",
        "deployed",
        version,
        url,
        {"backend": new, "previous": old and old["version"], "smoke": report.summary()},
    )
    notify(params, "deploy_succeeded", f"itsacat local: {result.summary()}", target="local")
    return result


def endpoint_status(params: Params, base: Path = Path(".")) -> dict[str, Any] | None:
    """What the local endpoint runs: proxy and backend, alive or not, and the live version;
    None when nothing was ever deployed here or the endpoint was stopped."""
    folder = state_dir(params, base)
    state = _adopt(folder, read_state(folder))
    proxy, active = state.get("proxy") or {}, state.get("active") or {}
    if not proxy and not active:
        return None
    routed = _proxy_status(folder) if ours(proxy, PROXY_MODULE) else None
    return {
        "state_dir": str(folder),
        "url": f"http://{proxy['host']}:{proxy['port']}" if proxy else None,
        "proxy_alive": routed is not None,
        "requests_served": (routed or {}).get("served"),
        "version": active.get("version"),
        "backend_alive": ours(active, SERVER_MODULE) and ping(active["port"]),
        "backend": active or None,
        "previous_version": (state.get("previous") or {}).get("version"),
    }


def stop_endpoint(params: Params, base: Path = Path(".")) -> list[str]:
    """Stop the proxy, then the backends (each finishing what is in flight); what stopped."""
    folder = state_dir(params, base)
    stopped = []
    with _locked(folder):
        state = _adopt(folder, read_state(folder))
        timeout = params.deploy.local.drain_timeout_s
        proxy = state.get("proxy") or {}
        if ours(proxy, PROXY_MODULE):
            stop_pid(proxy["pid"], timeout)
            stopped.append(f"proxy (pid {proxy['pid']})")
        for key in ("active", "previous"):
            backend = state.get(key) or {}
            if ours(backend, SERVER_MODULE):
                stop_pid(backend["pid"], timeout)
                stopped.append(f"model {backend['version']} (pid {backend['pid']})")
        state.update(proxy=None, active=None, previous=None)
        write_state(folder, state)
    return stopped
