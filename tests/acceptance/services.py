"""The services a user starts before a sweep, started the same way: `mlflow server` and `ray start --head`,
both on 127.0.0.1 with ports of their own, each in its own process group so that stopping it stops
all of it (and nothing of the other helpers' clusters on the same machine)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.sweep.test_job_submit import PORT_FLAGS as RAY_PORT_FLAGS, free_ports  # one place for both

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the environment's console scripts: mlflow, ray
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}  # Ray job statuses that do not change any more


def stop_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to the process group, SIGKILL to whatever is left of it after `grace_s`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children the leader did not take down with it
    except ProcessLookupError:
        pass
    process.wait()


def wait_until(condition, what: str, timeout_s: float, log: Path | None = None, interval_s: float = 1.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                                 + (f"\n{log.read_text()[-3000:]}" if log and log.is_file() else ""))
        time.sleep(interval_s)


class MlflowServer:
    """`mlflow server` with a sqlite backend and artifacts in `workdir`; stop() and start() again keep
    its port and its data, as a restarted server would."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> None:
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                   "--artifacts-destination", str(self.workdir / "artifacts")]
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=open(self.log, "a"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 120) -> None:
        wait_until(self.healthy, f"mlflow server at {self.url}", timeout_s, self.log, 0.5)

    def healthy(self) -> bool:
        assert self.process.poll() is None, f"mlflow server exited:\n{self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the server and its uvicorn workers (they would keep the port otherwise)."""
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def kill(self) -> None:
        """The server dies at once (SIGKILL to it and its workers), as in a crash."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        wait_until(self.down, "the killed mlflow server to stop answering", 30, self.log, 0.2)

    def down(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/health", timeout=2)
        except urllib.error.URLError as err:
            return isinstance(err.reason, ConnectionRefusedError)
        except OSError:
            return True
        return False


class RayHead:
    """`ray start --head --block` with its own temp dir and ports; `env` is what CLI clients need
    (RAY_AUTH_MODE=token: Ray 2.60 turns token authentication on for local clusters)."""

    def __init__(self, workdir: Path, num_cpus: int = 4):
        self.ports = dict(zip(RAY_PORT_FLAGS, free_ports(len(RAY_PORT_FLAGS))))
        # Short: Ray's socket paths must stay under 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="ray-acc-")
        self.dashboard = f"http://127.0.0.1:{self.ports['--dashboard-port']}"
        self.log = workdir / "ray-head.log"
        self.num_cpus = num_cpus
        self.env = {**os.environ, "RAY_AUTH_MODE": "token"}
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> None:
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}",
                   "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                   *[f"{flag}={port}" for flag, port in self.ports.items()]]
        self.process = subprocess.Popen(command, env=self.env, start_new_session=True, stdout=open(self.log, "w"),
                                        stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, f"ray head exited:\n{self.log.read_text()[-3000:]}"
            return self.ray("job", "list").returncode == 0

        wait_until(answers, f"ray head at {self.dashboard}", timeout_s, self.log, 2)

    def ray(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """The `ray` CLI against this head (`--address` the dashboard)."""
        return subprocess.run([str(BIN / "ray"), *args, "--address", self.dashboard], env=self.env,
                              capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)

    def submit(self, config: Path, env_vars: dict[str, str] | None = None) -> str:
        """`ray job submit --no-wait --working-dir . -- python -m sweep.run --config CONFIG`; the job id.
        `env_vars`: the job's environment variables (its runtime env)."""
        runtime_env = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
        done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--no-wait",
                               "--working-dir", ".", *runtime_env, "--", "python", "-m", "sweep.run",
                               "--config", str(config)],
                              env=self.env, capture_output=True, text=True, timeout=180, cwd=ROOT)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        job_id = next((word.strip("'\"") for line in output.splitlines() if "submitted successfully" in line
                       for word in line.split() if word.strip("'\"").startswith("raysubmit_")), None)
        assert job_id, output[-4000:]
        return job_id

    def jobs(self):
        """The Ray Jobs API client, authenticated with the token `ray start` wrote."""
        from ray.job_submission import JobSubmissionClient

        token = auth_token()
        return JobSubmissionClient(self.dashboard, headers={"Authorization": f"Bearer {token}"} if token else None)

    def train_workers(self) -> list[int]:
        """PIDs of this cluster's Ray Train workers (titled ray::RayTrainWorker), found through their
        raylet's command line, which names this head's temp dir: other clusters' workers are left alone."""
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if not entry.name.isdigit() or not (entry / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                    continue
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                if self.temp_dir.encode() in Path(f"/proc/{parent}/cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
        return pids

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, grace_s=60)
            self.process = None
        # `ray start` leaves its address for later `ray.init()` calls to attach to; the head is gone.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{self.ports['--port']}"):
            current.unlink()


def auth_token() -> str | None:
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return os.environ.get("RAY_AUTH_TOKEN")


def rest(server: str, endpoint: str, payload: dict | None = None, **query) -> dict:
    """One call to the MLflow REST API (GET with query parameters, or POST with a JSON body)."""
    url = f"{server}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query, doseq=True)
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if payload is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def artifact(server: str, run: dict, path: str) -> bytes:
    """An artifact's bytes through the server's artifact proxy (mlflow-artifacts:/ locations)."""
    root = run["info"]["artifact_uri"]
    assert root.startswith("mlflow-artifacts:/"), root  # served by the server, not a local path
    url = f"{server}/api/2.0/mlflow-artifacts/artifacts/{root[len('mlflow-artifacts:/'):].lstrip('/')}/{path}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read()


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def wait_for_job(jobs, job_id: str, timeout_s: float = 900) -> str:
    """Polls the Ray Jobs API until the job ends; returns its final status."""
    deadline = time.time() + timeout_s
    while (status := str(jobs.get_job_status(job_id).value)) not in TERMINAL:
        assert time.time() < deadline, (f"job {job_id} still {status} after {timeout_s} s:\n"
                                        f"{jobs.get_job_logs(job_id)[-4000:]}")
        time.sleep(3)
    return status


def attach(file: Path, output_dir: Path) -> Path:
    """A copy of `file` in the suite's output directory (kept after the temporary directories are gone)."""
    kept = output_dir / file.name
    shutil.copyfile(file, kept)
    return kept
