"""fmnist tune after crashes: a worker killed mid-trial (journal and PostgreSQL) has its trial
found, marked failed and run again, so the study still reaches --trials; two live workers
never take each other's trials; a journal cut short by a crash is repaired, and any other
damage to it is one error line."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# An sdist installed with only [dev] runs the other tests; these need their extra.
pytest.importorskip("optuna", reason="an extra of fmnist (tune, track) is not installed")
pytest.importorskip("sqlalchemy", reason="an extra of fmnist (tune, track) is not installed")

import optuna  # noqa: E402
import sqlalchemy  # noqa: E402
from conftest import run_cli  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402
from test_tune import space_file, tune_args  # noqa: E402

from fmnist.studies import tune as ftune  # noqa: E402
from fmnist.studies import tune_storage as fstore  # noqa: E402

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FOUND_0 = (
    "found 1 trial(s) left RUNNING by a worker that died (0): marked FAIL; queued 1 to run again with the same values"
)

# A worker that stops for good in the middle of trial 0 (after its first epoch), saying so
# in a file: the test then kills it with SIGKILL, as a crash or `kill -9` would.
HANG_IN_TRIAL_0 = """
import os, sys, time
from fmnist.studies import tune
report = tune.ReportToOptuna.on_epoch_end
def hang(self, row):
    report(self, row)
    if self.trial.number == 0:
        open(os.environ["FMNIST_TEST_MARK"], "w").close()
        time.sleep(600)
tune.ReportToOptuna.on_epoch_end = hang
from fmnist.cli import main
sys.argv = ["fmnist", *sys.argv[1:]]
main()
"""


def _kill_in_trial_0(args: list, tmp_path: Path) -> None:
    mark = tmp_path / "in-trial-0"
    env = {**os.environ, "FMNIST_NO_DOWNLOAD": "1", "FMNIST_TEST_MARK": str(mark)}
    cmd = [sys.executable, "-c", HANG_IN_TRIAL_0, *map(str, args)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180  # against a hang of the test, not a timing check
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never reached trial 0's first epoch"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no handler, no clean-up
        proc.communicate()


def _check_recovered(study: optuna.Study, trials: int) -> None:
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states, states
    assert len([t for t in study.trials if t.state in FINISHED]) == trials, states
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL
    again = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(again) == 1 and again[0].state in FINISHED
    assert again[0].params == dead.params  # the same values, run to the end this time


@pytest.mark.slow  # two searches: seconds of training
def test_a_killed_journal_worker_is_made_up_for_by_the_same_command(monkeypatch, capsys, tmp_path, synthetic_dir):
    out, space = tmp_path / "study", space_file(tmp_path, epochs={"low": 2, "high": 2})
    args = tune_args(synthetic_dir, out, space, "--study", "k", "--trials", 3)
    _kill_in_trial_0(args, tmp_path)
    storage = ftune.open_storage(None, out)
    assert [t.state for t in optuna.load_study(study_name="k", storage=storage).trials] == [TrialState.RUNNING]

    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "found 1 trial(s) left RUNNING by a worker that died (0)" in stdout
    _check_recovered(optuna.load_study(study_name="k", storage=ftune.open_storage(None, out)), 3)
    assert not (out / "trials" / "0000").exists()  # the dead trial's half-written run
    assert sorted(p.name for p in (out / fstore.LOCKS).iterdir()) == ["ask.lock"]


@pytest.mark.slow
def test_a_killed_postgres_worker_is_made_up_for_by_the_same_command(
    monkeypatch, capsys, tmp_path, synthetic_dir, request
):
    url = request.getfixturevalue("pg_url")  # test_tune's: a real server
    out, space = tmp_path / "study", space_file(tmp_path, epochs={"low": 2, "high": 2})
    name = f"k{os.getpid()}"
    # A heartbeat a second: the dead trial is known after 4 s of silence. The second worker
    # runs trials 1 and 2 meanwhile, or waits for it, then runs it again.
    args = tune_args(synthetic_dir, out, space, "--study", name, "--trials", 3, "--storage", url, "--heartbeat", 1)
    _kill_in_trial_0(args, tmp_path)
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "found 1 trial(s) left RUNNING by a worker that died (0)" in stdout
    _check_recovered(optuna.load_study(study_name=name, storage=ftune.open_storage(url, out)), 3)


# --- claims, without training ------------------------------------------------------------------


def _study(storage) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=storage, direction="maximize")


def _ask_with_a_value(claims: fstore.Claims, study: optuna.Study) -> optuna.Trial:
    trial = claims.ask(study)
    trial.suggest_float("lr", 0.01, 1.0)
    return trial


def _die(claims: fstore.JournalClaims) -> None:
    """What the kernel does to a killed worker's locks."""
    fd, _ = claims.held
    os.close(fd)
    claims.held = None


def test_two_live_journal_workers_never_take_each_others_trials(tmp_path):
    study = _study(ftune.open_storage(None, tmp_path))
    said: list[str] = []
    a, b = fstore.JournalClaims(tmp_path, said.append), fstore.JournalClaims(tmp_path, said.append)
    trial = _ask_with_a_value(a, study)
    b.recover(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] and said == []

    def a_finishes(seconds):  # while b waits, a ends its trial
        study.tell(trial, 0.5)
        a.release()

    b.sleep = a_finishes
    assert b.study_done(study, 1, lambda: False) is True  # b waited rather than left
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert said == ["waiting for trial(s) 0 of other workers to finish"]
    assert sorted(p.name for p in (tmp_path / fstore.LOCKS).iterdir()) == ["ask.lock"]


def test_a_dead_journal_worker_is_found_at_once_and_retried_a_limited_number_of_times(tmp_path):
    study = _study(ftune.open_storage(None, tmp_path))
    said: list[str] = []
    worker, other = fstore.JournalClaims(tmp_path, said.append), fstore.JournalClaims(tmp_path, said.append)
    lr = _ask_with_a_value(worker, study).params["lr"]
    for death in range(fstore.RETRIES + 1):
        if death:
            assert worker.ask(study).params == {"lr": lr}  # the queued trial, with the same value
        _die(worker)
        other.recover(study)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL] * (fstore.RETRIES + 1)  # the last one is not queued again
    assert said[0] == FOUND_0
    last = fstore.RETRIES  # trials 0, 1, ... RETRIES are the same values, each run until its worker died
    assert said[-1].endswith(f"not again: {last} (their worker died {fstore.RETRIES + 1} times)"), said
    # the study goes on with new trials: nothing is RUNNING or waiting
    assert other.study_done(study, 1, lambda: False) is False


def test_a_silent_database_worker_is_found_and_a_beating_one_never(tmp_path):
    storage = ftune.open_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path, heartbeat=60)
    study = _study(storage)
    said: list[str] = []
    a, b = (
        fstore.HeartbeatClaims(storage, tmp_path, said.append),
        fstore.HeartbeatClaims(storage, tmp_path, said.append),
    )
    trial = _ask_with_a_value(a, study)

    def age_heartbeats(seconds: int) -> None:  # the clock, moved on for every heartbeat
        with storage.engine.begin() as db:
            db.execute(
                sqlalchemy.text(f"UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-{seconds} seconds')")
            )

    age_heartbeats(fstore.GRACE_BEATS * 60 - 30)  # beats missed, but fewer than the grace period
    b.recover(study)
    age_heartbeats(3600)
    storage.record_heartbeat(trial._trial_id)  # what a's heartbeat thread does, every 60 s
    b.recover(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] and said == []

    a.beat.stopped.set()  # a dies: its beats stop
    a.beat.thread.join()
    age_heartbeats(fstore.GRACE_BEATS * 60 + 30)
    b.recover(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert said == [FOUND_0]
    assert study.trials[1].params == trial.params


def test_the_heartbeat_thread_beats_until_stopped(monkeypatch, tmp_path):
    beats, enough = [], threading.Event()

    class Storage:
        def record_heartbeat(self, trial_id):
            beats.append(trial_id)
            if len(beats) >= 3:
                enough.set()

    beat = fstore._Heartbeat(Storage(), 7, 0.001)
    assert beats[:1] == [7]  # the first at once, before the trial starts
    assert enough.wait(60)
    beat.stop()
    stopped_at = len(beats)
    beat.thread.join()
    assert not beat.thread.is_alive() and len(beats) == stopped_at


# --- a damaged journal ---------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path) -> Path:
    """A study folder whose journal holds study "s" with three finished trials."""
    folder = tmp_path / "s"
    study = optuna.create_study(study_name="s", storage=ftune.open_storage(None, folder), direction="maximize")
    for i in range(3):
        study.add_trial(
            create_trial(params={"lr": 0.1 * (i + 1)}, distributions={"lr": FloatDistribution(0.01, 1)}, value=0.5)
        )
    return folder / ftune.JOURNAL


def _records(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_a_journal_cut_short_by_a_crash_is_repaired_with_a_warning(journal):
    whole = journal.read_bytes()
    n = _records(journal)
    journal.write_bytes(whole[:-15])  # what a crash in the middle of a write leaves
    with pytest.warns(UserWarning, match=f"last record was cut short .* keeping its {n - 1} complete records"):
        storage = ftune.open_storage(None, journal.parent)
    assert journal.read_bytes() == whole[: whole.rindex(b"\n", 0, len(whole) - 1) + 1]
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2  # the third's end was lost
    journal.write_bytes(whole[:-1])  # only the line end lost: the record is kept
    with pytest.warns(UserWarning, match=f"lost its line end .* keeping its {n} complete records"):
        ftune.open_storage(None, journal.parent)
    assert journal.read_bytes() == whole


def test_a_cut_short_journal_is_repaired_by_show_too(monkeypatch, capsys, journal):
    journal.write_bytes(journal.read_bytes()[:-7])
    code, out, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", journal.parent)
    assert code == 0 and out.count("COMPLETE") == 2
    assert err.startswith("warning: ") and "cut short" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b + os.urandom(300).replace(b"\n", b"x"),  # binary junk after the records
        lambda b: b + b"garbage",  # text that is no record, without a line end
        lambda b: b + b"not a record\n",
        lambda b: b[:40] + b"\xff\xfe" + b[42:],  # a broken record in the middle
    ],
    ids=["binary-junk", "text-junk", "junk-line", "broken-middle"],
)
def test_other_damage_is_one_error_line_for_tune_and_show(
    monkeypatch, capsys, tmp_path, synthetic_dir, journal, damage
):
    journal.write_bytes(damage(journal.read_bytes()))
    before = journal.read_bytes()
    space = space_file(tmp_path)
    for args in (
        ("tune", "--study", "s", "--show", "--out", journal.parent),
        tune_args(synthetic_dir, journal.parent, space, "--study", "s"),
    ):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, err
        assert err.startswith(f"error: {journal} is damaged: line ") and err.count("\n") == 1, err
        assert "truncate -s" in err or "restore the file from a backup" in err
    assert journal.read_bytes() == before  # refused, not "repaired"


def test_the_truncate_the_error_line_gives_keeps_the_records_before_the_damage(monkeypatch, capsys, journal):
    whole = journal.read_bytes()
    journal.write_bytes(whole + b"\x00junk\n")
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", journal.parent)
    size = int(err.split("truncate -s ")[1].split()[0])
    os.truncate(journal, size)
    assert journal.read_bytes() == whole
    code, out, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", journal.parent)
    assert code == 0 and out.count("COMPLETE") == 3, err


def test_records_optuna_cannot_replay_are_one_error_line(monkeypatch, capsys, journal):
    journal.write_bytes(b'{"op_code": 99, "worker_id": "x"}\n')
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", journal.parent)
    assert code == 2 and err.count("\n") == 1 and "Optuna cannot replay this journal" in err, err
