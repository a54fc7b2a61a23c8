"""The trajectory store: the same behaviour from both backends, then what is particular to Parquet files.

The behavioural tests run against every backend through the `store` fixture; the MongoDB run needs a server
at $TERRARIUM_MONGODB_URI (marker `mongodb`) and is skipped without one.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import re
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pymongo
import pytest
from pydantic import ValidationError

from rollout.data.store import (
    MONGODB_URI_ENV,
    TRAJECTORY_SCHEMA,
    ParquetTrajectoryStore,
    StoreConfig,
    TrajectoryStore,
    _temp_path,
    open_store,
)
from rollout.data.trajectory import Trajectory

MONGODB_URI = os.environ.get(MONGODB_URI_ENV)
NEEDS_MONGODB = [
    pytest.mark.mongodb,
    pytest.mark.skipif(not MONGODB_URI, reason=f"{MONGODB_URI_ENV} is not set: no MongoDB server to test against"),
]
UNREACHABLE_PORT = 9  # nothing listens on the discard port: connections are refused at once


def make_trajectory(run_id: str = "run-a", step: int = 0, index: int = 0, group_id: str = "g0") -> Trajectory:
    """A trajectory whose values are hard to round-trip: big ints, subnormal and negative floats, nested
    metadata; `index` varies the values so records differ."""
    return Trajectory(
        episode_id=f"{run_id}-s{step}-{group_id}-e{index}",
        run_id=run_id,
        step=step,
        group_id=group_id,
        harness="number_guess",
        seed=2**40 + index,
        policy_version=step,
        token_ids=[151643, 0, 2**62 + index, 7],
        loss_mask=[0, 0, 1, 1],
        logprobs=[0.0, 0.0, -0.1 - index / 3, -5e-324],
        prompt_length=2,
        turn_rewards=[0.1, -1e-300, 1 / 3],
        total_reward=0.1 + 1 / 3 + index,
        status="completed",
        num_turns=3,
        parse_failures=index % 2,
        timings={"generate": 0.123456789, "harness": 1e-9, "total": 2.5},
        metadata={"persona": "claude", "axes": [0.9, -0.4, 1], "nested": {"ok": True, "none": None}, "é": "ü"},
    )


def as_exact_text(trajectories: list[Trajectory]) -> list[str]:
    """repr tells 1 from 1.0 and shows every float digit and the key order: equal text = exact round trip."""
    return [repr(t.to_dict()) for t in trajectories]


@pytest.fixture(params=["parquet", pytest.param("mongodb", marks=NEEDS_MONGODB)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "parquet":
        config = StoreConfig(backend="parquet", root=tmp_path / "store")
    else:
        config = StoreConfig(backend="mongodb", database=f"terrarium_test_{uuid.uuid4().hex[:12]}")
    opened = open_store(config)
    yield opened
    opened.close()
    if request.param == "mongodb":
        with pymongo.MongoClient(MONGODB_URI) as client:
            client.drop_database(config.database)


# ---- behaviour shared by every backend -----------------------------------------------------------------


def test_round_trip_is_exact(store: TrajectoryStore) -> None:
    written = [make_trajectory(index=i) for i in range(3)]
    empty = dataclasses.replace(
        make_trajectory(index=9), token_ids=[], loss_mask=[], logprobs=[], turn_rewards=[], timings={}, metadata={}
    )
    store.write("run-a", 0, written + [empty])

    read = store.read("run-a")

    expected = sorted(written + [empty], key=lambda t: (t.step, t.group_id, t.episode_id))
    assert as_exact_text(read) == as_exact_text(expected)
    assert read == expected


def test_steps_and_reading_one_step(store: TrajectoryStore) -> None:
    for step in (5, 0, 1):
        store.write("run-a", step, [make_trajectory(step=step, index=i) for i in range(2)])
    store.write("run-b", 3, [make_trajectory(run_id="run-b", step=3)])

    assert store.steps("run-a") == [0, 1, 5]
    assert store.steps("run-b") == [3]
    assert [t.episode_id for t in store.read("run-a", step=1)] == ["run-a-s1-g0-e0", "run-a-s1-g0-e1"]
    assert [t.step for t in store.read("run-a")] == [0, 0, 1, 1, 5, 5]
    assert store.read("run-a", step=2) == []


def test_read_orders_by_step_group_and_episode(store: TrajectoryStore) -> None:
    batch = [make_trajectory(index=i, group_id=g) for g in ("g1", "g0") for i in (1, 0)]
    store.write("run-a", 0, batch)

    assert [(t.group_id, t.episode_id) for t in store.read("run-a")] == [
        ("g0", "run-a-s0-g0-e0"),
        ("g0", "run-a-s0-g0-e1"),
        ("g1", "run-a-s0-g1-e0"),
        ("g1", "run-a-s0-g1-e1"),
    ]


def test_unknown_run_is_empty(store: TrajectoryStore) -> None:
    assert store.read("never-written") == []
    assert store.steps("never-written") == []


def test_rewriting_stored_episodes_does_not_duplicate(store: TrajectoryStore) -> None:
    first = [make_trajectory(index=i) for i in range(3)]
    store.write("run-a", 0, first)
    replayed = [dataclasses.replace(t, total_reward=-99.0) for t in first]  # a crashed worker's replay

    store.write("run-a", 0, replayed + [make_trajectory(index=3)])
    store.write("run-a", 0, first)

    read = store.read("run-a")
    assert [t.episode_id for t in read] == [f"run-a-s0-g0-e{i}" for i in range(4)]
    assert as_exact_text(read[:3]) == as_exact_text(first)  # the first copy stays


def test_repeated_episode_within_one_write_is_stored_once(store: TrajectoryStore) -> None:
    trajectory = make_trajectory()
    store.write("run-a", 0, [trajectory, dataclasses.replace(trajectory, total_reward=-1.0)])

    assert as_exact_text(store.read("run-a")) == as_exact_text([trajectory])


def test_empty_write_stores_nothing(store: TrajectoryStore) -> None:
    store.write("run-a", 4, [])

    assert store.steps("run-a") == []


@pytest.mark.parametrize(
    ("run_id", "step", "trajectory", "message"),
    [
        ("run-b", 0, make_trajectory(), "belongs to run 'run-a' step 0"),
        ("run-a", 1, make_trajectory(), "belongs to run 'run-a' step 0"),
        ("../escape", 0, make_trajectory(run_id="../escape"), "run_id must be"),
        ("run-a", -1, make_trajectory(step=-1), "step must be an int >= 0"),
        ("run-a", 0, dataclasses.replace(make_trajectory(), episode_id=""), "episode_id must be"),
        ("run-a", 0, dataclasses.replace(make_trajectory(), metadata={"pair": (1, 2)}), "JSON round trip"),
        ("run-a", 0, dataclasses.replace(make_trajectory(), metadata={"x": {1, 2}}), "is not JSON"),
        ("run-a", 0, dataclasses.replace(make_trajectory(), metadata={"x": float("nan")}), "is not JSON"),
    ],
)
def test_bad_writes_fail_clearly_and_store_nothing(
    store: TrajectoryStore, run_id: str, step: int, trajectory: Trajectory, message: str
) -> None:
    good = make_trajectory(run_id=trajectory.run_id, step=trajectory.step, index=5)

    with pytest.raises(ValueError, match=re.escape(message)):
        store.write(run_id, step, [good, trajectory])

    assert store.steps("run-a") == []


def test_bad_read_arguments_fail_clearly(store: TrajectoryStore) -> None:
    with pytest.raises(ValueError, match="run_id must be"):
        store.read("a/b")
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        store.read("run-a", step="3")  # type: ignore[arg-type]


def test_documents_round_trip_once_per_id(store: TrajectoryStore) -> None:
    """EvolutionTrajectory records from /train: a retried request stores nothing twice."""
    documents = [
        {"id": "b-uuid", "reward": 0.25, "action": {"adjustments": [["confidence", 0.1]], "confidence": 0.5}},
        {"id": "a-uuid", "reward": -1e-300, "used_in_training": False, "importance_weight": 1.0, "x": None},
    ]
    assert store.put_documents("evolution_trajectory", documents) == {"a-uuid", "b-uuid"}
    assert store.put_documents("evolution_trajectory", [{"id": "a-uuid", "reward": 9.0}, {"id": "c-uuid"}]) == {
        "c-uuid"
    }
    assert store.put_documents("evolution_trajectory", documents) == set()  # a full retry stores nothing new
    assert store.put_documents("other_kind", [{"id": "a-uuid", "other": 1}]) == {"a-uuid"}

    assert store.get_documents("evolution_trajectory") == [documents[1], documents[0], {"id": "c-uuid"}]
    assert store.get_documents("evolution_trajectory", ["c-uuid", "b-uuid", "z"]) == [documents[0], {"id": "c-uuid"}]
    assert store.get_documents("other_kind") == [{"id": "a-uuid", "other": 1}]
    assert store.get_documents("never-written") == []


@pytest.mark.parametrize(
    ("kind", "documents", "message"),
    [
        ("evolution_trajectory", [{"reward": 1.0}], "non-empty string 'id'"),
        ("evolution_trajectory", [{"id": 7}], "non-empty string 'id'"),
        ("evolution_trajectory", [{"id": "a", "when": object()}], "is not JSON"),
        ("bad kind", [{"id": "a"}], "document kind must be"),
    ],
)
def test_bad_documents_fail_clearly(store: TrajectoryStore, kind: str, documents: list, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        store.put_documents(kind, documents)


# ---- Parquet files --------------------------------------------------------------------------------------


def test_schema_has_every_trajectory_field() -> None:
    assert TRAJECTORY_SCHEMA.names == [f.name for f in dataclasses.fields(Trajectory)]
    assert TRAJECTORY_SCHEMA.field("token_ids").type == pa.list_(pa.int64())
    assert TRAJECTORY_SCHEMA.field("timings").type == pa.map_(pa.string(), pa.float64())
    assert TRAJECTORY_SCHEMA.field("metadata").type == pa.string()  # arbitrary JSON, kept as text


def test_parquet_files_are_hive_partitioned_by_run_and_step(tmp_path: Path) -> None:
    store = ParquetTrajectoryStore(tmp_path)
    store.write("run-a", 0, [make_trajectory(index=i) for i in range(2)])
    store.write("run-a", 0, [make_trajectory(index=2)])
    store.write("run-a", 12, [make_trajectory(step=12)])

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())

    assert len(files) == 3
    pattern = r"trajectories/run_id=run-a/step=(0|12)/part-[0-9a-f]{32}\.parquet"
    assert all(re.fullmatch(pattern, f) for f in files), files
    rows_by_file = sorted((Path(f).parent.name, pq.read_table(tmp_path / f).num_rows) for f in files)
    assert rows_by_file == [("step=0", 1), ("step=0", 2), ("step=12", 1)]
    assert pq.read_table(tmp_path / files[0]).schema.equals(TRAJECTORY_SCHEMA)


def test_parquet_dataset_is_readable_with_pyarrow(tmp_path: Path) -> None:
    store = ParquetTrajectoryStore(tmp_path)
    for step in (0, 1, 2):
        store.write("run-a", step, [make_trajectory(step=step, index=i) for i in range(3)])
    store.write("run-b", 0, [make_trajectory(run_id="run-b")])

    dataset = store.dataset("run-a")

    assert isinstance(dataset, ds.Dataset)
    assert dataset.count_rows() == 9
    step_1 = dataset.to_table(filter=ds.field("step") == 1, columns=["episode_id", "token_ids"])
    assert sorted(step_1.column("episode_id").to_pylist()) == [f"run-a-s1-g0-e{i}" for i in range(3)]
    assert step_1.column("token_ids").to_pylist()[0][:2] == [151643, 0]
    assert store.dataset("never-written").count_rows() == 0
    every_run = ds.dataset(tmp_path / "trajectories", format="parquet")  # run_id and step are columns too
    assert sorted(set(every_run.to_table(columns=["run_id"]).column("run_id").to_pylist())) == ["run-a", "run-b"]


def test_parquet_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = ParquetTrajectoryStore(tmp_path)
    for step in range(3):
        store.write("run-a", step, [make_trajectory(step=step)])
    store.put_documents("evolution_trajectory", [{"id": "a"}])

    names = [p.name for p in tmp_path.rglob("*") if p.is_file() and "claims" not in p.parts]

    assert len(names) == 4
    assert all(re.fullmatch(r"part-[0-9a-f]{32}\.parquet", name) for name in names), names


def test_parquet_ignores_a_crashed_writers_temp_file(tmp_path: Path) -> None:
    """A writer killed before its rename leaves a dot-named temp file: no reader may see it."""
    store = ParquetTrajectoryStore(tmp_path)
    trajectory = make_trajectory()
    store.write("run-a", 0, [trajectory])
    run_dir = tmp_path / "trajectories" / "run_id=run-a"
    (run_dir / "step=7").mkdir()
    for step_dir in (run_dir / "step=0", run_dir / "step=7"):
        _temp_path(step_dir / f"part-{uuid.uuid4().hex}.parquet").write_bytes(b"PAR1 half a file")

    assert store.steps("run-a") == [0]
    assert as_exact_text(store.read("run-a")) == as_exact_text([trajectory])
    assert store.dataset("run-a").count_rows() == 1
    store.write("run-a", 0, [trajectory, make_trajectory(index=1)])
    assert len(store.read("run-a")) == 2


def test_parquet_removes_stale_temp_files_when_opened(tmp_path: Path) -> None:
    """A temp file older than any write is a crashed writer's; a fresh one may be another writer's, in use."""
    ParquetTrajectoryStore(tmp_path).write("run-a", 0, [make_trajectory()])
    step_dir = tmp_path / "trajectories" / "run_id=run-a" / "step=0"
    stale, fresh = (_temp_path(step_dir / f"part-{uuid.uuid4().hex}.parquet") for _ in range(2))
    for temp in (stale, fresh):
        temp.write_bytes(b"PAR1 half a file")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    reopened = ParquetTrajectoryStore(tmp_path)

    assert not stale.exists() and fresh.exists()
    assert len(reopened.read("run-a")) == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_parquet_moves_an_unreadable_part_aside_and_keeps_going(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ParquetTrajectoryStore(tmp_path)
    store.write("run-a", 0, [make_trajectory(index=0)])
    store.write("run-a", 1, [make_trajectory(step=1, index=1)])
    store.put_documents("evolution_trajectory", [{"id": "a"}])
    store.put_documents("evolution_trajectory", [{"id": "b"}])
    (bad_part,) = (tmp_path / "trajectories" / "run_id=run-a" / "step=1").glob("part-*.parquet")
    (bad_doc, _) = sorted((tmp_path / "documents").rglob("part-*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    for path in (bad_part, bad_doc):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not parquet at all" * 10)

    reopened = ParquetTrajectoryStore(tmp_path)  # another process: it has never read these files
    with caplog.at_level(logging.WARNING, logger="rollout.data.store"):
        assert [t.episode_id for t in reopened.read("run-a")] == ["run-a-s0-g0-e0"]
        assert reopened.get_documents("evolution_trajectory") == [{"id": "b"}]
    assert "moved unreadable" in caplog.text
    quarantined = tmp_path / "quarantine" / bad_part.relative_to(tmp_path)
    assert quarantined.is_file() and not bad_part.exists()
    assert (tmp_path / "quarantine" / bad_doc.relative_to(tmp_path)).is_file()
    reopened.write("run-a", 1, [make_trajectory(step=1, index=1)])  # the lost record can be written again
    assert reopened.steps("run-a") == [0, 1] and len(reopened.read("run-a")) == 2


def _put_after_barrier(root: Path, ids: list[str], barrier: Any) -> set[str]:
    store = ParquetTrajectoryStore(root)
    barrier.wait()
    return store.put_documents("evolution_trajectory", [{"id": id_, "n": 1} for id_ in ids])


def test_parquet_claims_each_document_for_one_process_of_many(tmp_path: Path) -> None:
    """Processes racing to store the same ids (replicas answering one retried /train): exactly one of them
    is told each id is new, so each is trained on once."""
    ids = [f"id-{i}" for i in range(50)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(4, mp_context=context) as pool:
        barrier = manager.Barrier(4)
        results = list(pool.map(_put_after_barrier, [tmp_path] * 4, [ids] * 4, [barrier] * 4))

    claimed = [id_ for result in results for id_ in result]
    assert sorted(claimed) == sorted(ids)  # every id new to exactly one process
    assert [doc["id"] for doc in ParquetTrajectoryStore(tmp_path).get_documents("evolution_trajectory")] == sorted(ids)


# ---- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backend": "sqlite", "root": "x"}, "backend"),
        ({"root": "x"}, "backend"),
        ({"backend": "parquet"}, "backend 'parquet' needs 'root'"),
        ({"backend": "parquet", "root": "x", "mongodb_uri": "mongodb://h"}, "'mongodb_uri' is for backend"),
        ({"backend": "mongodb", "root": "x"}, "'root' is for backend 'parquet'"),
        ({"backend": "parquet", "root": "x", "rootdir": "y"}, "Extra inputs are not permitted"),
        ({"backend": "mongodb", "server_selection_timeout_s": 0}, "greater than 0"),
        ({"backend": "mongodb", "write_timeout_s": -1}, "greater than 0"),
    ],
)
def test_bad_config_is_rejected(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        StoreConfig.model_validate(data)


def test_parquet_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    a_file = tmp_path / "store"
    a_file.write_text("not a directory")

    with pytest.raises(ValueError, match="is not a directory"):
        open_store(StoreConfig(backend="parquet", root=a_file))


def test_mongodb_without_uri_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MONGODB_URI_ENV, raising=False)

    with pytest.raises(ValueError, match=re.escape(MONGODB_URI_ENV)):
        open_store(StoreConfig(backend="mongodb"))


def test_mongodb_uri_with_another_scheme_is_rejected_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"must start with mongodb://") as raised:
        open_store(StoreConfig(backend="mongodb", mongodb_uri="http://user:hunter2@localhost:27017"))

    assert "hunter2" not in str(raised.value)


def test_missing_mongodb_server_fails_fast_naming_the_uri_without_password() -> None:
    uri = f"mongodb://terrarium:s3cret@127.0.0.1:{UNREACHABLE_PORT}/?authSource=admin"
    config = StoreConfig(backend="mongodb", mongodb_uri=uri, server_selection_timeout_s=0.3)

    with pytest.raises(ConnectionError) as raised:
        open_store(config)

    message = str(raised.value)
    assert f"mongodb://terrarium:***@127.0.0.1:{UNREACHABLE_PORT}/?authSource=admin" in message
    assert "s3cret" not in message


def test_mongodb_uri_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MONGODB_URI_ENV, f"mongodb://envuser:envpass@127.0.0.1:{UNREACHABLE_PORT}/")

    with pytest.raises(ConnectionError, match=re.escape(f"envuser:***@127.0.0.1:{UNREACHABLE_PORT}")) as raised:
        open_store(StoreConfig(backend="mongodb", server_selection_timeout_s=0.3))

    assert "envpass" not in str(raised.value)
