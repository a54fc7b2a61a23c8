"""The trajectory store: where finished episodes are kept, durably, before the learner hears of them.

Rollout workers call `write(run_id, step, trajectories)`; when it returns the records survive a crash, so the
learner may be told. Writing is idempotent per (run, episode_id): a worker that crashed after writing and is
replayed writes the same episode ids again, and the store keeps the first copy only. Two backends share one
interface: Parquet files on a (shared) file system, readable as an Arrow dataset, and MongoDB.

The /train endpoint also keeps RustyWorm EvolutionTrajectory records. Those are not Terrarium trajectories
(no tokens, no run, no step), so the store keeps them as generic JSON documents of a named `kind`, each
identified by its own string "id" and stored once per (kind, id), so a client that retries a request does
not duplicate them: `put_documents(kind, documents)` returns the ids this call stored first, and
`get_documents(kind, ids)` reads them back. Which call stored an id first holds across processes and
replicas (Parquet: an atomic claim file per id; MongoDB: the unique index), so the /train endpoint trains
each trajectory exactly once however often a client retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import typing
import uuid
from abc import ABC, abstractmethod
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pymongo
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from rollout.data.trajectory import Trajectory
from rollout.models.checkpoints import fsync_path

MONGODB_URI_ENV = "TERRARIUM_MONGODB_URI"
logger = logging.getLogger(__name__)

# run ids and document kinds become directory names (run_id=<id>), so they are kept to a safe alphabet;
# both backends apply the same rule so a name valid for one is valid for the other.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index violation


class StoreConfig(BaseModel):
    """Which backend keeps the trajectories.

    parquet: files under `root`. mongodb: the server at `mongodb_uri`, or at $TERRARIUM_MONGODB_URI when
    `mongodb_uri` is not set (keeps the password out of config files).
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["parquet", "mongodb"]
    root: Path | None = Field(None, description="parquet only: the store's directory (created if missing)")
    mongodb_uri: str | None = Field(None, description=f"mongodb only; default: ${MONGODB_URI_ENV}")
    database: str = Field("terrarium", min_length=1, description="mongodb only")
    collection: str = Field("trajectories", min_length=1, description="mongodb only: the trajectories")
    documents_collection: str = Field("documents", min_length=1, description="mongodb only: put_documents")
    server_selection_timeout_s: float = Field(5.0, gt=0, description="mongodb only: fail fast without a server")
    write_timeout_s: float = Field(10.0, gt=0, description="mongodb only: a write not acknowledged by then fails")

    @model_validator(mode="after")
    def _fields_match_backend(self) -> StoreConfig:
        if self.backend == "parquet":
            if self.root is None:
                raise ValueError("backend 'parquet' needs 'root' (a directory)")
            if self.mongodb_uri is not None:
                raise ValueError("'mongodb_uri' is for backend 'mongodb', not 'parquet'")
        elif self.root is not None:
            raise ValueError("'root' is for backend 'parquet', not 'mongodb'")
        return self


class TrajectoryStore(ABC):
    """Durable, idempotent storage of trajectories by run and step, plus generic JSON documents."""

    @abstractmethod
    def write(self, run_id: str, step: int, trajectories: list[Trajectory]) -> None:
        """Store the trajectories of one step; durable on return. Episode ids already stored for the run
        (or repeated within the list) are skipped: the first copy stays."""

    @abstractmethod
    def read(self, run_id: str, step: int | None = None) -> list[Trajectory]:
        """The run's trajectories (of one step, or all), ordered by (step, group_id, episode_id)."""

    @abstractmethod
    def steps(self, run_id: str) -> list[int]:
        """The steps of the run that have trajectories, ascending."""

    @abstractmethod
    def put_documents(self, kind: str, documents: list[dict[str, Any]]) -> set[str]:
        """Store JSON documents, each with a string "id"; durable on return; an id already stored for the
        kind is skipped. Returns the ids this call stored first: of concurrent calls in any processes that
        store one id, exactly one gets it back."""

    @abstractmethod
    def get_documents(self, kind: str, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The documents of a kind (those with the given ids, or all), ordered by id."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(config: StoreConfig) -> TrajectoryStore:
    """The configured backend, ready to use (MongoDB: the server has answered and the indexes exist)."""
    if config.backend == "parquet":
        assert config.root is not None  # the config validator guarantees it
        return ParquetTrajectoryStore(config.root)
    uri = config.mongodb_uri or os.environ.get(MONGODB_URI_ENV)
    if not uri:
        raise ValueError(f"backend 'mongodb' needs 'mongodb_uri' in the config or ${MONGODB_URI_ENV} set")
    return MongoTrajectoryStore(
        uri,
        database=config.database,
        collection=config.collection,
        documents_collection=config.documents_collection,
        server_selection_timeout_s=config.server_selection_timeout_s,
        write_timeout_s=config.write_timeout_s,
    )


# ---- checks shared by both backends: bad input fails before anything is stored --------------------------


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-128 characters of letters, digits, '.', '_' or '-' starting with a letter or "
            f"digit, got {value!r}"
        )
    return value


def _check_json(value: Any, what: str) -> str:
    """The value as JSON text, refusing what would not come back equal (tuples, sets, NaN, int keys...)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is not JSON: {error}") from None
    if json.loads(text) != value:
        raise ValueError(f"{what} does not survive a JSON round trip (tuples, non-string keys?): {value!r}")
    return text


def _check_step(step: object) -> int:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return step


def _new_trajectories(run_id: str, step: int, trajectories: list[Trajectory]) -> list[Trajectory]:
    """The checked batch without repeated episode ids (the first copy wins, as in the store)."""
    _check_name(run_id, "run_id")
    _check_step(step)
    unique: dict[str, Trajectory] = {}
    for trajectory in trajectories:
        if not isinstance(trajectory, Trajectory):
            raise ValueError(f"expected Trajectory records, got {type(trajectory).__name__}")
        if not isinstance(trajectory.episode_id, str) or not trajectory.episode_id:
            raise ValueError(f"episode_id must be a non-empty string, got {trajectory.episode_id!r}")
        if trajectory.run_id != run_id or trajectory.step != step:
            raise ValueError(
                f"trajectory {trajectory.episode_id} belongs to run {trajectory.run_id!r} step "
                f"{trajectory.step}, not to run {run_id!r} step {step} being written"
            )
        _check_json(trajectory.metadata, f"metadata of trajectory {trajectory.episode_id}")
        unique.setdefault(trajectory.episode_id, trajectory)
    return list(unique.values())


def _new_documents(kind: str, documents: list[dict[str, Any]]) -> dict[str, str]:
    """id -> JSON text of the checked documents, without repeated ids (the first copy wins)."""
    _check_name(kind, "document kind")
    unique: dict[str, str] = {}
    for document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("id"), str) or not document["id"]:
            raise ValueError(f"each {kind} document must be a dict with a non-empty string 'id'")
        text = _check_json(document, f"{kind} document {document['id']}")
        unique.setdefault(document["id"], text)
    return unique


# ---- Parquet -------------------------------------------------------------------------------------------

# One column per Trajectory field, in the dataclass order, derived from its type hints so the shape is
# written once (rollout.data.trajectory). Lists keep their exact int64/float64 values; a dict[str, float]
# is a typed map (queryable); a dict[str, Any] holds arbitrary JSON values, which no one Arrow type fits,
# so it is JSON text. run_id and step are columns as well as directory names, so every file stands alone.
_ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    list[int]: pa.list_(pa.int64()),
    list[float]: pa.list_(pa.float64()),
    dict[str, float]: pa.map_(pa.string(), pa.float64()),
    dict[str, Any]: pa.string(),
}
_TRAJECTORY_TYPES = typing.get_type_hints(Trajectory)
TRAJECTORY_SCHEMA = pa.schema([(f.name, _ARROW_TYPES[_TRAJECTORY_TYPES[f.name]]) for f in fields(Trajectory)])
_JSON_COLUMNS = [name for name, hint in _TRAJECTORY_TYPES.items() if hint == dict[str, Any]]
_MAP_COLUMNS = [name for name, hint in _TRAJECTORY_TYPES.items() if hint == dict[str, float]]
DOCUMENT_SCHEMA = pa.schema([("kind", pa.string()), ("id", pa.string()), ("document", pa.string())])
# Typed explicitly: inferred from "step=3" the partition would be int32 and clash with the int64 column.
_STEP_PARTITIONING = ds.partitioning(pa.schema([("step", pa.int64())]), flavor="hive")
_SORT_ORDER = [("step", "ascending"), ("group_id", "ascending"), ("episode_id", "ascending")]
_STALE_TEMP_S = 600.0  # a temp file this old was left by a writer that crashed (writes take seconds)


def _temp_path(final_path: Path) -> Path:
    """Where a file is written before its rename: dot-named, so pyarrow.dataset never reads it."""
    return final_path.with_name(f".{final_path.name}.tmp")


def _write_parquet_atomically(table: pa.Table, directory: Path, root: Path) -> None:
    """Write `table` as directory/part-<uuid>.parquet (directory lies under root): a dot-named temp file,
    fsynced, then renamed: readers see the whole file or nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    final_path = directory / f"part-{uuid.uuid4().hex}.parquet"
    temp_path = _temp_path(final_path)
    try:
        pq.write_table(table, temp_path)  # by path: arrow's own file writer (a Python file object is slower)
        fsync_path(temp_path)
        os.rename(temp_path, final_path)
    finally:
        temp_path.unlink(missing_ok=True)
    # The new file's entry, and the entries of the directories this write may have created.
    path = directory
    while True:
        fsync_path(path)
        if path == root or path == path.parent:
            break
        path = path.parent


class ParquetTrajectoryStore(TrajectoryStore):
    """Hive-partitioned Parquet files: root/trajectories/run_id=<id>/step=<n>/part-<uuid>.parquet and
    root/documents/kind=<kind>/part-<uuid>.parquet.

    Each write adds a new file (files are never rewritten), after checking the run's stored episode ids on
    disk, so writers in other processes are seen. Two writers storing the same episode id at the same
    instant are not serialised: the driver hands an episode to one worker at a time. Every write adds a
    file, so write whole groups or steps: one file per episode makes reads slow.

    Documents are claimed: after its file is in place, a writer creates root/claims/kind=<kind>/<sha256 of
    id> with O_CREAT|O_EXCL, an atomic test-and-set on any POSIX file system, so of concurrent writers of one
    id exactly one is told it stored it (the others' rows are duplicates, which reads drop). The file is
    written before the claim, so a crash between them loses nothing: the id is stored, merely reported to
    no one as new.

    Self-healing: a part file that cannot be read is moved to root/quarantine/ (same relative path) with a
    warning, and the store goes on without it; temp files a crashed writer left are removed when the store
    is opened.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"parquet store root {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        # The ids in each file; a file never changes once renamed into place, so it is read once.
        self._ids_by_file: dict[Path, set[str]] = {}
        self._remove_stale_temp_files()

    def _run_dir(self, run_id: str) -> Path:
        return self.root / "trajectories" / f"run_id={_check_name(run_id, 'run_id')}"

    def _kind_dir(self, kind: str) -> Path:
        return self.root / "documents" / f"kind={_check_name(kind, 'document kind')}"

    def _remove_stale_temp_files(self) -> None:
        """Temp files older than _STALE_TEMP_S belong to writers that crashed; younger ones may be in use."""
        cutoff = time.time() - _STALE_TEMP_S
        for path in self.root.glob("**/.part-*.parquet.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    logger.warning("trajectory store: removed %s, left by a writer that did not finish", path)
            except FileNotFoundError:  # another process removed it first
                pass

    def _quarantine(self, path: Path, error: Exception) -> None:
        """Move an unreadable part file out of the dataset, to root/quarantine/<its relative path>."""
        target = self.root / "quarantine" / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another process moved it first
            return
        logger.warning(
            "trajectory store: moved unreadable %s to %s (%s: %s)", path, target, type(error).__name__, error
        )

    def _stored_ids(self, directory: Path, column: str) -> set[str]:
        """The ids stored under `directory`. It is listed on every call, so files that other processes
        wrote count too; only files not seen before are read (in full, so a damaged one is found here and
        quarantined before a dataset read trips over it)."""
        ids: set[str] = set()
        for path in directory.glob("**/part-*.parquet"):
            if path not in self._ids_by_file:
                try:
                    self._ids_by_file[path] = set(pq.read_table(path)[column].to_pylist())
                except (OSError, pa.ArrowException, KeyError) as error:  # truncated, garbage, wrong schema
                    self._quarantine(path, error)
                    continue
            ids |= self._ids_by_file[path]
        return ids

    def write(self, run_id: str, step: int, trajectories: list[Trajectory]) -> None:
        batch = _new_trajectories(run_id, step, trajectories)
        stored = self._stored_ids(self._run_dir(run_id), "episode_id")
        new = [trajectory for trajectory in batch if trajectory.episode_id not in stored]
        if not new:
            return
        # Column by column from the attributes: Trajectory.to_dict (dataclasses.asdict) deep-copies every
        # token and would take most of the write time.
        columns = {name: [getattr(trajectory, name) for trajectory in new] for name in TRAJECTORY_SCHEMA.names}
        for name in _JSON_COLUMNS:
            columns[name] = [json.dumps(value) for value in columns[name]]
        try:
            table = pa.Table.from_pydict(columns, schema=TRAJECTORY_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"trajectories of run {run_id!r} step {step} do not fit the schema: {error}") from None
        _write_parquet_atomically(table, self._run_dir(run_id) / f"step={step}", self.root)

    def dataset(self, run_id: str) -> ds.Dataset:
        """The run as an Arrow dataset (step is a partition: filters on it skip other steps' files); empty
        when the run has no trajectories. Unreadable files are quarantined first. For all runs:
        ds.dataset(root / "trajectories") reads the run_id and step columns from the files."""
        run_dir = self._run_dir(run_id)
        if not run_dir.is_dir():
            return ds.dataset([], format="parquet", schema=TRAJECTORY_SCHEMA)
        self._stored_ids(run_dir, "episode_id")
        return ds.dataset(run_dir, format="parquet", schema=TRAJECTORY_SCHEMA, partitioning=_STEP_PARTITIONING)

    def read(self, run_id: str, step: int | None = None) -> list[Trajectory]:
        where = None if step is None else ds.field("step") == _check_step(step)
        table = self.dataset(run_id).to_table(filter=where).sort_by(_SORT_ORDER)
        trajectories = []
        for row in table.to_pylist():
            for name in _MAP_COLUMNS:
                row[name] = dict(row[name])
            for name in _JSON_COLUMNS:
                row[name] = json.loads(row[name])
            trajectories.append(Trajectory.from_dict(row))
        return trajectories

    def steps(self, run_id: str) -> list[int]:
        run_dir = self._run_dir(run_id)
        if not run_dir.is_dir():
            return []
        # A step directory holding only a crashed writer's temp file has no trajectories.
        return sorted(
            int(step_dir.name.removeprefix("step="))
            for step_dir in run_dir.glob("step=*")
            if any(step_dir.glob("part-*.parquet"))
        )

    def _claim(self, kind: str, id_: str) -> bool:
        """True for the one caller, in any process, that creates this id's claim file first."""
        claim_dir = self.root / "claims" / f"kind={kind}"
        claim_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(claim_dir / hashlib.sha256(id_.encode()).hexdigest(), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def put_documents(self, kind: str, documents: list[dict[str, Any]]) -> set[str]:
        batch = _new_documents(kind, documents)
        stored = self._stored_ids(self._kind_dir(kind), "id")
        rows = [{"kind": kind, "id": id_, "document": text} for id_, text in batch.items() if id_ not in stored]
        if not rows:
            return set()
        table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
        _write_parquet_atomically(table, self._kind_dir(kind), self.root)
        new = {row["id"] for row in rows if self._claim(kind, row["id"])}
        fsync_path(self.root / "claims" / f"kind={kind}")
        return new

    def get_documents(self, kind: str, ids: list[str] | None = None) -> list[dict[str, Any]]:
        kind_dir = self._kind_dir(kind)
        if not kind_dir.is_dir():
            return []
        self._stored_ids(kind_dir, "id")  # quarantines unreadable files
        where = None if ids is None else ds.field("id").isin(ids)
        dataset = ds.dataset(kind_dir, format="parquet", schema=DOCUMENT_SCHEMA)
        table = dataset.to_table(columns=["id", "document"], filter=where).sort_by("id")
        # One document per id: a racing writer's duplicate rows count once.
        unique = dict(zip(table.column("id").to_pylist(), table.column("document").to_pylist()))
        return [json.loads(text) for text in unique.values()]

    def close(self) -> None:
        """Nothing to release: every write closes its file."""


# ---- MongoDB -------------------------------------------------------------------------------------------


def _redact_password(uri: str) -> str:
    """mongodb://user:secret@host/... -> mongodb://user:***@host/..., for error messages."""
    scheme, separator, rest = uri.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not separator or ":" not in credentials:
        return uri
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}"


def _duplicate_indexes(error: BulkWriteError) -> set[int]:
    """An unordered insert stores every new record and reports the duplicates (their indexes in the batch);
    anything else is a failure (a write concern error means the records may not be durable)."""
    details = error.details
    if details.get("writeConcernErrors") or any(e["code"] != _DUPLICATE_KEY for e in details["writeErrors"]):
        raise error
    return {e["index"] for e in details["writeErrors"]}


class MongoTrajectoryStore(TrajectoryStore):
    """One document per trajectory (the Trajectory fields, nested as BSON) in `collection`; generic
    documents as {kind, id, document} in `documents_collection`.

    Unique indexes on (run_id, episode_id) and (kind, id) make duplicates impossible even across
    processes; writes are unordered inserts whose duplicate-key errors are the expected replays (and tell
    put_documents which ids were new). Writes use write concern majority + journal with a wtimeout, and every
    operation a client-side timeoutMS, so `write` returning means the records survive a crash and a stuck
    server fails a write instead of hanging it.
    """

    def __init__(
        self,
        uri: str,
        database: str,
        collection: str,
        documents_collection: str,
        server_selection_timeout_s: float = 5.0,
        write_timeout_s: float = 10.0,
    ) -> None:
        shown_uri = _redact_password(uri)
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"MongoDB URI must start with mongodb:// or mongodb+srv://, got {shown_uri!r}")
        timeout_ms = int(server_selection_timeout_s * 1000)
        try:
            self._client: pymongo.MongoClient = pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                timeoutMS=int(write_timeout_s * 1000),
            )
        except (PyMongoError, ValueError) as error:
            raise ValueError(f"invalid MongoDB URI {shown_uri}: {error}") from None
        try:
            self._client.admin.command("ping")
        except PyMongoError as error:
            self._client.close()
            raise ConnectionError(
                f"trajectory store: no MongoDB server usable at {shown_uri} within {server_selection_timeout_s} s "
                f"({type(error).__name__}: {error})"
            ) from None
        db = self._client.get_database(
            database,
            write_concern=WriteConcern(w="majority", j=True, wtimeout=int(write_timeout_s * 1000)),
            read_concern=ReadConcern("majority"),
        )
        self._trajectories = db[collection]
        self._documents = db[documents_collection]
        self._trajectories.create_index([("run_id", 1), ("step", 1), ("group_id", 1)])
        self._trajectories.create_index([("run_id", 1), ("episode_id", 1)], unique=True)
        self._documents.create_index([("kind", 1), ("id", 1)], unique=True)

    def write(self, run_id: str, step: int, trajectories: list[Trajectory]) -> None:
        batch = _new_trajectories(run_id, step, trajectories)
        if not batch:
            return
        try:
            self._trajectories.insert_many([t.to_dict() for t in batch], ordered=False)
        except BulkWriteError as error:
            _duplicate_indexes(error)

    def read(self, run_id: str, step: int | None = None) -> list[Trajectory]:
        query: dict[str, Any] = {"run_id": _check_name(run_id, "run_id")}
        if step is not None:
            query["step"] = _check_step(step)
        cursor = self._trajectories.find(query, {"_id": 0}).sort([(name, 1) for name, _ in _SORT_ORDER])
        return [Trajectory.from_dict(document) for document in cursor]

    def steps(self, run_id: str) -> list[int]:
        return sorted(self._trajectories.distinct("step", {"run_id": _check_name(run_id, "run_id")}))

    def put_documents(self, kind: str, documents: list[dict[str, Any]]) -> set[str]:
        batch = _new_documents(kind, documents)
        if not batch:
            return set()
        records = [{"kind": kind, "id": id_, "document": json.loads(text)} for id_, text in batch.items()]
        duplicates: set[int] = set()
        try:
            self._documents.insert_many(records, ordered=False)
        except BulkWriteError as error:
            duplicates = _duplicate_indexes(error)
        return {record["id"] for index, record in enumerate(records) if index not in duplicates}

    def get_documents(self, kind: str, ids: list[str] | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"kind": _check_name(kind, "document kind")}
        if ids is not None:
            query["id"] = {"$in": list(ids)}
        cursor = self._documents.find(query, {"_id": 0, "document": 1})
        return [record["document"] for record in cursor.sort("id", 1)]

    def close(self) -> None:
        self._client.close()
