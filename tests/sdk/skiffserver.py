"""Start and stop a real `skiff server` for the Python suites (TLS with its local CA)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SUB = "00000000-0000-0000-0000-000000000000"


def skiff_bin():
    if os.environ.get("SKIFF_BIN"):
        return os.environ["SKIFF_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "target"))
    return os.path.abspath(os.path.join(target, "debug", "skiff"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, extra_args=()):
        tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"
        # Short paths: supervisors' unix sockets live beneath the data dir.
        self.data_dir = f"/tmp/skf-py-{tag}"
        self.run_dir = f"/run/skf-py-{tag}"
        self.cgroup_parent = f"skiff-py-{tag}"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = self.data_dir + ".server.log"

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [skiff_bin(), "server", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}",
             "--run-dir", self.run_dir, "--cgroup-parent", self.cgroup_parent,
             "--stop-grace-ms", "300", "--restart-backoff-ms", "200", "--page-size", "2", *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "info"})
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff server exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.token_path) and os.path.exists(self.ca_path):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"skiff server did not start:\n{self.log()}")
        self.token = open(self.token_path).read().strip()
        return self

    @property
    def token_path(self):
        return os.path.join(self.data_dir, "admin.token")

    @property
    def ca_path(self):
        return os.path.join(self.data_dir, "tls", "ca.pem")

    def log(self, tail=4000):
        """The server's log: its last `tail` characters, or all of it with tail=None."""
        try:
            text = open(self.log_path).read()
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        for base in (self.data_dir, self.run_dir):
            mounts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    m = line.split(" ")[4]
                    if m == base or m.startswith(base + "/"):
                        mounts.append(m)
            for m in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", m], check=False)
            shutil.rmtree(base, ignore_errors=True)
        for ctrl in os.listdir("/sys/fs/cgroup"):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", ctrl, self.cgroup_parent))
            except OSError:
                pass
        try:
            os.remove(self.log_path)
        except OSError:
            pass
