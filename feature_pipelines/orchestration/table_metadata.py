"""Table metadata the Dagster UI renders: column schemas with the spec's descriptions."""

import dagster as dg
import polars as pl


def table_schema(schema: dict[str, pl.DataType], descriptions: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in schema.items()]
    )
