"""The ``whistle`` command line, run as a user runs it."""

import json
import re
import subprocess
import urllib.request

import pytest

from services.routing.rules import SHIPPED_RULES
from shared import config as cfg
from shared.auth import verify_token
from tests.e2e.conftest import WHISTLE

pytestmark = pytest.mark.e2e


def whistle(*args, env=None, timeout=60):
    return subprocess.run([WHISTLE, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_token_is_signed_for_the_agency_and_staff(whistle_env):
    whistle_env[cfg.SECRET] = "x" * 40
    result = whistle("token", "gas", "--staff", "li-09", "--ttl", "60", env=whistle_env)
    assert result.returncode == 0, result.stderr
    principal = verify_token(result.stdout.strip(), "x" * 40)
    assert (principal.agency, principal.staff_id) == ("gas", "li-09")


def test_token_refuses_an_agency_the_rules_do_not_know(whistle_env):
    whistle_env[cfg.SECRET] = "x" * 40
    result = whistle("token", "nonexistent_agency", env=whistle_env)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "unknown agency 'nonexistent_agency'" in line
    assert "desk" in line and "water" in line and "street_office" in line


def test_rules_check_lists_every_error_with_its_line(tmp_path):
    bad = tmp_path / "rules.yaml"
    shipped = SHIPPED_RULES
    bad.write_text(shipped.read_text(encoding="utf-8").replace("lead: power\n", "lead: powr\n", 1),
                   encoding="utf-8")
    result = whistle("rules", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:" in result.stderr and "unknown agency 'powr'" in result.stderr
    line = int(result.stderr.split(f"{bad}:")[1].split(":")[0])
    assert "powr" in bad.read_text(encoding="utf-8").splitlines()[line - 1]
    assert whistle("rules", "check", str(shipped)).returncode == 0


def test_up_refuses_a_bad_rules_file_without_a_traceback(whistle_env, tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nrules: [\n", encoding="utf-8")
    whistle_env[cfg.RULES_FILE] = str(bad)
    result = whistle("up", "--services", "routing", env=whistle_env, timeout=30)
    assert result.returncode == 1
    assert "routing rules are invalid" in result.stderr and f"{bad}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_refuses_dev_defaults_in_production(whistle_env):
    whistle_env[cfg.ENVIRONMENT] = "production"
    result = whistle("up", env=whistle_env, timeout=30)
    assert result.returncode == 1
    assert "refusing to start in production" in result.stderr


def test_a_second_up_on_an_address_in_use_stops_with_one_line(whistle_processes, whistle_env):
    """eventlet listens with SO_REUSEPORT by default: a second ``whistle up`` on the same
    port used to start without a word and take half of the first one's connections."""
    first = whistle_processes("intake")
    result = whistle("up", "--services", "intake", "--address", first.address, env=whistle_env,
                     timeout=30)
    assert result.returncode == 1
    assert f"{first.address} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert urllib.request.urlopen(f"{first.url}/health", timeout=5).status == 200


def test_up_on_queues_of_the_other_type_stops_with_one_line(whistle_env):
    """A half-done ``whistle queues migrate --to quorum`` (run while the services ran, it
    moves the dead-letter queue, which has no consumer, and names the rest): a service
    started again on classic queues refused, rightly, but in three tracebacks."""
    from kombu import Connection

    from shared.topology import QUORUM, declare_topology
    from tests.conftest import free_port

    with Connection(whistle_env[cfg.AMQP_URI]) as connection:
        declare_topology(connection, QUORUM)
    result = whistle("up", "--services", "routing", "--address", str(free_port()),
                     env=whistle_env, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "whistle.dead-letter exists with other arguments than a classic queue" in last
    assert "whistle queues migrate --to classic" in last


def test_an_address_taken_while_up_waited_for_the_broker_stops_it_with_one_line(whistle_env):
    """The address is checked before the wait for the broker (up to 60 s); taken meanwhile
    (a second `whistle up` waiting for the same broker), it failed in nameko's start, in
    tracebacks. The broker here is a forwarder to the real one, opened once the address
    is taken."""
    import socket
    import threading

    from tests.conftest import free_port

    web, relay = free_port(), free_port()
    upstream = re.match(r"(\w+)://([^@]+)@([^:/]+):(\d+)/(.*)", whistle_env[cfg.AMQP_URI])
    env = {**whistle_env,
           cfg.AMQP_URI: f"{upstream[1]}://{upstream[2]}@127.0.0.1:{relay}/{upstream[5]}"}
    up = subprocess.Popen([WHISTLE, "up", "--services", "intake", "--address", str(web)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    taken, server, said = None, None, []
    try:
        for line in up.stderr:  # up has checked the address, and waits for the broker
            said.append(line)
            if "waiting for RabbitMQ" in line:
                break
        taken = socket.create_server(("127.0.0.1", web))
        server = socket.create_server(("127.0.0.1", relay))

        def pipe(source, sink):
            with source, sink:
                while data := source.recv(65536):
                    sink.sendall(data)

        def forward():
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                broker = socket.create_connection((upstream[3], int(upstream[4])))
                for a, b in ((client, broker), (broker, client)):
                    threading.Thread(target=pipe, args=(a, b.dup()), daemon=True).start()

        threading.Thread(target=forward, daemon=True).start()
        stderr = "".join(said) + up.communicate(timeout=60)[1]
    finally:
        if up.poll() is None:
            up.kill()
        for sock in (taken, server):
            if sock is not None:
                sock.close()
    assert up.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert f"127.0.0.1:{web} is already in use" in stderr.strip().splitlines()[-1]


def test_demo_drives_the_field_cases_through_a_running_whistle(whistle_processes, whistle_env):
    app = whistle_processes()
    result = whistle("demo", "--url", app.url, "--json", env=whistle_env, timeout=120)
    assert result.returncode == 0, result.stderr
    cases = json.loads(result.stdout)
    assert [c["status"] for c in cases] == ["resolved"] * 4
    flying_wire, balcony, radiator, _ceiling = cases
    assert flying_wire["priority"] == "urgent" and flying_wire["agencies"] == [["power", "lead"]]
    assert len(balcony["agencies"]) > 1
    assert radiator["messages"][0].startswith("[Whistle] We have received your report")
    # The reference number once in the words (the progress link carries it too).
    assert all(re.sub(r"https?://\S+", "", c["messages"][0]).count(c["issue_id"]) == 1
               for c in cases)
    # With no webhook or email configured the desk relays every message, by phone or at
    # the door: its copy of "received" says what to tell the resident, with no link (the
    # desk never holds a link's token, so a redacted one was useless read aloud).
    assert not any("http" in c["messages"][0] for c in cases)
    assert all("社区会第一时间告诉您" in c["messages"][0] or "community desk will keep you"
               in c["messages"][0] for c in cases)
