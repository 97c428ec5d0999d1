"""The demo instance's event log: Dagster's run-sharded SQLite storage, written in batches.

A range run of the main job records, per asset and per partition, one "materialization planned" event
before its first step and one materialization after its step: ~10,000 events for a year of days. The stock
`SqliteEventLogStorage` writes each event through a new SQLAlchemy engine and connection, in its own
transaction, committed with a full fsync, and writes every asset event twice (the run's shard and the
cross-run index). That was two thirds of the main job's wall time.

`BatchedSqliteEventLogStorage` keeps the files and schema (the UI, the daemons and older demo homes read
them unchanged) and changes only how events are written:

- **One engine per shard per process**, kept open, instead of one per event.
- **`synchronous=NORMAL` under WAL**: a commit no longer waits for fsync. An application crash loses
  nothing; a power cut may lose the last commits. Right for a local demo instance; production uses
  PostgreSQL (deploy/dagster.yaml).
- **Schema facts cached**: whether a table or an index column exists is asked once per process, not
  inspected per event (they appear on migration, `dagster instance migrate`, and are never dropped).
- **A planned check serialized once** for the run, not once per partition it is planned for.
- **Batches**: Dagster hands a storage the events it emits in a burst (a run's planned events, a step's
  materializations of many partitions) as one batch when `DAGSTER_EVENT_BATCH_SIZE` is set; this storage
  sets it (in the processes that load it) and writes a batch in one transaction per shard. Every event is
  still stored, one row each: each partition is recorded as planned and as materialized, as before.

Registered in `.dagster_home/dagster.yaml` (`event_log_storage`). Relies on Dagster's private
`SqliteEventLogStorage._connect` (dagster is pinned; see pyproject.toml).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster._config import Field, StringSource
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection, Engine

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
BATCH_SIZE = 1000
"""Events Dagster buffers before handing them over (a burst shorter than this is one batch)."""
OPEN_RUN_SHARDS = 4
"""Run shards whose engine stays open (the running ones); older ones are closed (the index always stays)."""


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with persistent engines, `synchronous=NORMAL` and one transaction per batch.

    `base_dir` defaults to Dagster's own location for the default storage (`$DAGSTER_HOME/history/runs`),
    so switching an existing demo home to this class keeps its history."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._batch: dict[str, Connection] | None = None
        self._tables: set[str] = set()
        self._asset_key_index_cols = False
        super().__init__(base_dir or default_base_dir(), inst_data)
        self._db_lock = threading.RLock()  # re-entered by the shard connections opened inside a batch
        os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():  # a forked child must not share the parent's connections
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.get(shard)
        if engine is None:
            engine = db.create_engine(
                self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            db.event.listen(engine, "connect", _no_fsync_per_commit)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
                engine.dispose()  # a new shard turned to WAL just now: reconnect so the pragma applies
            self._engines[shard] = engine
            run_shards = [s for s in self._engines if s != INDEX_SHARD_NAME]
            for old in run_shards[:-OPEN_RUN_SHARDS]:
                self._engines.pop(old).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:  # type: ignore[override]
        with self._db_lock:
            if self._batch is not None:  # inside `store_event_batch`: the batch's open transaction
                conn = self._batch.get(shard)
                if conn is None:
                    conn = self._engine(shard).connect()
                    conn.begin()
                    self._batch[shard] = conn
                yield conn
                return
            with self._engine(shard).connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Every event exactly as `store_event` stores it, in one transaction per shard (run shard first: a
        failure after it makes Dagster store the events one by one, so the index never counts one twice)."""
        with self._db_lock:
            self._batch = batch = {}
            try:
                for event in events:
                    self.store_event(event)
            except BaseException:
                for conn in batch.values():
                    conn.rollback()
                raise
            else:
                for shard in sorted(batch, key=lambda s: s == INDEX_SHARD_NAME):
                    batch[shard].commit()
            finally:
                self._batch = None
                for conn in batch.values():
                    conn.close()

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables:
            if not super().has_table(table_name):
                return False  # not cached: a migration may create it
            self._tables.add(table_name)
        return True

    def _has_asset_key_index_cols_on_connection(self, conn: Connection) -> bool:
        if not self._asset_key_index_cols:
            self._asset_key_index_cols = super()._has_asset_key_index_cols_on_connection(conn)
        return self._asset_key_index_cols

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """As Dagster stores it (one row per planned partition), with the event serialized once, not per row."""
        planned = event.get_dagster_event().asset_check_planned_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert().values([{**common, "partition": k} for k in keys]))

    def upgrade(self) -> None:
        self._tables, self._asset_key_index_cols = set(), False
        super().upgrade()

    def _dispose_engines(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._dispose_engines()  # the run shards' files are deleted: no connection may keep them
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


def default_base_dir() -> str:
    """Where Dagster's default SQLite storage keeps event logs: `$DAGSTER_HOME/history/runs`."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("BatchedSqliteEventLogStorage: set DAGSTER_HOME or give `base_dir` in dagster.yaml")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "history", "runs", "")


def _no_fsync_per_commit(dbapi_connection: Any, _record: Any) -> None:
    """`synchronous=NORMAL` on a WAL database: durable across application crashes, fsync at checkpoints."""
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
