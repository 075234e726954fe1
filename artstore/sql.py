"""DuckDB over Arrow tables: the only importer of duckdb.

Minimal for now (the retention issue's SQL rule): `query_tables` runs one read-only SELECT over
named in-memory Arrow tables. The SQL issue grows this module into `Store.sql` and its views.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa

from artstore.errors import SqlError

_READ_ONLY = {duckdb.StatementType.SELECT}


def query_tables(query: str, tables: Mapping[str, pa.Table]) -> pa.Table:
    """Run one SELECT over `tables` (registered as views by name) and return the result.
    Anything else (writes, PRAGMAs, several statements) raises SqlError; so does a failed query.
    The connection can reach no file or network: only the tables given."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(f"cannot parse the query: {e}") from None
    if len(statements) != 1 or statements[0].type not in _READ_ONLY:
        raise SqlError("give exactly one SELECT statement (the query may not write, attach or set anything)")
    con = duckdb.connect(":memory:")
    try:
        for name, table in tables.items():
            con.register(name, table)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con.sql(query).to_arrow_table()
    except duckdb.Error as e:
        raise SqlError(f"query failed: {e}") from None
    finally:
        con.close()
