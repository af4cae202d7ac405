"""The README's "Use it" block, followed literally by a new user: in a fresh `git clone` of this
repository, in a fresh shell (`bash --noprofile --norc`, a new empty HOME, PATH without any
virtualenv), every command of the block in order, each one's output checked.

What differs from a user's machine, and why:
- Ports: tests never use fixed ports, so the README's 8080 and 8900 become free ports and
  `tokentrail kafka up` gets `--port <free>`; the flows' metrics port is off
  (TOKENTRAIL_FLOWS_METRICS_PORT=0 in the shell's environment). Nothing else in the text changes.
- `make install`: the real one builds a virtualenv and installs ~60 packages (about 90 s here,
  minutes under load). By default the test prepares the clone's `.venv` itself in about a
  second: a venv whose `tokentrail` command and imports come from the clone, with the
  dependencies taken from the virtualenv running the tests (a .pth file), and the stamp file
  that makes `make install` a no-op, which the block then runs as written.
  TOKENTRAIL_README_FULL_INSTALL=1 runs the real `make install` instead.
- The Kafka jars cache (TOKENTRAIL_KAFKA_CACHE) is the machine's, so the 45 MB are not fetched
  again for the empty HOME.
The clone holds what is committed: run this test after committing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson
import pytest

from tokentrail.broker.jars import BrokerSettings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- use-it:start -->", "<!-- use-it:end -->"


def use_it_commands() -> list[str]:
    """The command lines of the README's "Use it" block."""
    block = ROOT.joinpath("README.md").read_text().split(START)[1].split(END)[0]
    body = block.split("```sh\n")[1].split("```")[0]
    return [line for line in body.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json(text: str) -> dict:
    return orjson.loads(text.strip().splitlines()[-1])


# One check per command, in README order: (start of the command, check of (exit code, stdout, stderr)).
CHECKS = [
    ("make install", lambda rc, out, err: rc == 0),
    (". .venv/bin/activate", lambda rc, out, err: rc == 0),
    ("cd ~", lambda rc, out, err: rc == 0),
    ("export TOKENTRAIL_SIGNING_KEY", lambda rc, out, err: rc == 0),
    ("export TOKENTRAIL_OPERATOR_KEY", lambda rc, out, err: rc == 0),
    (
        "tokentrail kafka up",
        lambda rc, out, err: (
            rc == 0 and re.search(r"^kafka 4\.\S+ started at 127\.0\.0\.1:\d+", out, re.M) and "all present" in out
        ),
    ),
    ("tokentrail mock-upstream", lambda rc, out, err: rc == 0),
    ("tokentrail flows", lambda rc, out, err: rc == 0),
    ("TOKENTRAIL_UPSTREAM_OPENAI_URL=", lambda rc, out, err: rc == 0),
    ("curl -s --retry", lambda rc, out, err: rc == 0 and _json(out)["ready"] is True),
    (
        "tokentrail keys create --tenant acme --actor-type human",
        lambda rc, out, err: rc == 0 and _json(out)["tenant_id"] == "acme" and _json(out)["key"].startswith("tt_"),
    ),
    ("ALICE_KEY_ID=", lambda rc, out, err: rc == 0),
    (
        "tokentrail keys create --tenant acme --actor-type agent",
        lambda rc, out, err: rc == 0 and [link["actor"]["id"] for link in _json(out)["chain"]] == ["alice", "planner"],
    ),
    ("PLANNER_KEY=", lambda rc, out, err: rc == 0),
    (
        "curl -s --fail --retry 5",
        lambda rc, out, err: rc == 0 and _json(out)["object"] == "chat.completion" and _json(out)["usage"],
    ),
    ("until tokentrail report", lambda rc, out, err: rc == 0),
    (
        "tokentrail report cost --by root",
        lambda rc, out, err: (
            rc == 0 and re.search(r"^acme\s+\S+\s+human\s+alice\s+1\s+0\s+\d+\s+\d+\s+0\.0\d+\s+0$", out, re.M)
        ),
    ),
    (
        "tokentrail events --tenant acme",
        lambda rc, out, err: rc == 0 and re.search(r"\sllm_call\s.*agent:planner\s+gpt-4o\S*\s+200\s+0\.0\d+", out),
    ),
    ("tokentrail freeze --tenant acme", lambda rc, out, err: rc == 0 and out.strip() == "frozen: tenant:acme"),
    ("tokentrail keys revoke", lambda rc, out, err: rc == 0 and out.startswith("revoked ")),
    ("kill %1 %2 %3", lambda rc, out, err: rc == 0),
    ("tokentrail kafka down", lambda rc, out, err: rc == 0 and out.startswith("kafka stopped")),
]


def prepare_venv(clone: Path) -> None:
    """The clone's .venv without a network install (see the module docstring)."""
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True)
    site = Path(
        subprocess.run(
            [str(clone / ".venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # First the clone (its packages are top-level directories), then this run's dependencies.
    site.joinpath("_tokentrail_clone.pth").write_text(f"{clone}\n{sysconfig.get_paths()['purelib']}\n")
    script = clone / ".venv/bin/tokentrail"
    script.write_text(f"#!{clone}/.venv/bin/python\nimport sys\nfrom tokentrail.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (clone / ".venv/.installed").touch()


def test_the_readme_use_it_block_works_as_written(tmp_path):
    commands = use_it_commands()
    assert [c for c, _ in CHECKS] == [next((c for c, _ in CHECKS if line.startswith(c)), line) for line in commands], (
        "the README's Use it block changed: update CHECKS with a check for every command"
    )

    clone, home, steps = tmp_path / "tokentrail", tmp_path / "home", tmp_path / "steps"
    home.mkdir()
    steps.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if os.environ.get("TOKENTRAIL_README_FULL_INSTALL") != "1":
        prepare_venv(clone)

    gateway_port, mock_port, kafka_port = _free_port(), _free_port(), _free_port()
    script = ["set +e"]
    for index, line in enumerate(commands):
        line = line.replace("8080", str(gateway_port)).replace("8900", str(mock_port))
        line = line.replace("tokentrail kafka up", f"tokentrail kafka up --port {kafka_port}")
        script.append(f"{{ {line}\n}} > {steps}/{index}.out 2> {steps}/{index}.err; echo $? > {steps}/{index}.rc")
    script_file = tmp_path / "use-it.sh"
    script_file.write_text("\n".join(script) + "\n")

    base_python_dir = str(Path(getattr(sys, "_base_executable", sys.executable)).parent)
    env = {
        "HOME": str(home),
        "PATH": f"/usr/local/bin:/usr/bin:/bin:{base_python_dir}",
        "LANG": "C.UTF-8",
        "TOKENTRAIL_KAFKA_CACHE": str(BrokerSettings().kafka_cache),
        "TOKENTRAIL_FLOWS_METRICS_PORT": "0",
    }
    if "JAVA_HOME" in os.environ:
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    state = home / ".local/state/tokentrail"
    shell = subprocess.Popen(
        ["bash", "--noprofile", "--norc", str(script_file)],
        cwd=clone,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        shell.wait(timeout=600)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        if (state / "kafka/broker.json").exists():  # the block failed before `kafka down`
            subprocess.run(
                [str(clone / ".venv/bin/tokentrail"), "kafka", "down"], env={**env, "TOKENTRAIL_HOME": str(state)}
            )

    for index, (line, (_, check)) in enumerate(zip(commands, CHECKS, strict=True)):
        rc_file = steps / f"{index}.rc"
        assert rc_file.exists(), f"step {index} ({line}) never ran"
        rc, out, err = (
            int(rc_file.read_text()),
            (steps / f"{index}.out").read_text(),
            (steps / f"{index}.err").read_text(),
        )
        assert check(rc, out, err), f"step {index}: {line}\nexit {rc}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"

    # The state went to the user's state directory, not the clone or the working directory.
    assert (state / "clickhouse").is_dir() and not (clone / ".tokentrail").exists()
    # The background processes stopped cleanly: nothing alarming in their output.
    for log in ("mock.log", "flows.log", "gateway.log"):
        text = (home / log).read_text()
        assert "Traceback" not in text and "panicked" not in text and '"level":"ERROR"' not in text, (log, text[-3000:])
    assert "tokentrail flows: stopped" in (home / "flows.log").read_text()
    assert "gateway stopped" in (home / "gateway.log").read_text()
    shutil.rmtree(clone / ".venv", ignore_errors=True)
