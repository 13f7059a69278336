"""How a restarted process comes back (app/services/fleet/restart.py): exit for a supervisor, else re-execute."""

from __future__ import annotations

import pytest

from app.services.fleet.restart import ProcessRestart, is_supervised


@pytest.mark.parametrize(
    ("setting", "environ", "supervised"),
    [
        ("auto", {}, False),  # make run, make up: nothing would start it again
        ("auto", {"INVOCATION_ID": "0f3c"}, True),  # systemd
        ("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
        ("auto", {"INVOCATION_ID": ""}, False),
        ("yes", {}, True),
        ("no", {"INVOCATION_ID": "0f3c", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False),
    ],
)
def test_supervision_is_the_setting_or_seen_in_the_environment(
    setting: str, environ: dict[str, str], supervised: bool
) -> None:
    assert is_supervised(setting, environ) is supervised


def test_a_request_outside_a_launcher_is_ignored_and_a_supervised_one_exits_75() -> None:
    restart = ProcessRestart()
    assert not restart.request("test") and restart.ignored == 1 and not restart.requested
    with restart.serving(supervised=True):
        assert restart.armed
    assert not restart.armed, "armed only while the launcher serves"
    with pytest.raises(SystemExit) as exited:
        restart.come_back()
    assert exited.value.code == 75
