"""The GX checks read the marts through Arrow (quality._read_frame, issue 17) and must see exactly
the frames DuckDB's ``.df()`` gives, so every suite's outcome is unchanged."""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from keytech import quality


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a fixed order: a parallel scan of a warehouse table may give them in any."""
    return frame.sort_values(list(frame.columns), na_position="first").reset_index(drop=True)


def test_nullable_columns_get_the_dtypes_of_df():
    con = duckdb.connect()
    con.execute("""
        create table t as select * from (values
            (1::tinyint, 10::integer, 100::bigint, 7::ubigint, true, 'a', 1.5::double, date '2020-01-02',
             timestamp '2020-01-02 03:04:05', 1.25::decimal(10, 2), 5::hugeint, [1, 2], 'b'),
            (null, null, null, null, null, null, null, null, null, null, null, null, null),
            (3::tinyint, 30::integer, 300::bigint, 9::ubigint, false, 'c', 2.5::double, date '2021-03-04',
             timestamp '2021-05-06 07:08:09', 2.50::decimal(10, 2), 6::hugeint, [3], '')
        ) as v(tiny, int32, int64, unsigned, flag, label, amount, day, moment, price, huge, items, note)
    """)
    con.execute("create table full_rows as select * from t where tiny is not null")
    for table in ("t", "full_rows"):
        sql = f"select * from {table}"
        expected = con.execute(sql).df()
        read = quality._read_frame(con, sql)
        assert read.dtypes.to_dict() == expected.dtypes.to_dict(), table
        pd.testing.assert_frame_equal(read, expected)  # one thread, in-memory: the same row order
    # a nullable integer is not turned into float (the branch the conversion exists for)
    assert str(quality._read_frame(con, "select * from t").dtypes["int32"]) == "Int32"


def test_every_suite_sees_the_frame_of_df_and_gives_the_same_outcome(tiny_demo_warehouse):
    con = duckdb.connect(str(tiny_demo_warehouse["db"]), read_only=True)
    try:
        con.execute("select 1").fetchone()  # an earlier result on the connection, as in run_checks
        by_df, by_arrow = {}, {}
        for mart in quality.SUITES:
            sql = f"select {quality._suite_columns(mart)} from marts.{mart}"
            by_df[mart] = con.execute(sql).df()
            by_arrow[mart] = quality._read_frame(con, sql)
            assert by_arrow[mart].dtypes.to_dict() == by_df[mart].dtypes.to_dict(), mart
            pd.testing.assert_frame_equal(_sorted(by_arrow[mart]), _sorted(by_df[mart]))
            assert len(by_df[mart]) > 0, mart
    finally:
        con.close()
    suites = quality.suites_for(2022)
    outcomes = [json.dumps(quality._run_suites(frames, suites), sort_keys=True, default=str)
                for frames in (by_arrow, by_df)]  # as text: a NaN among the unexpected values is not == itself
    assert outcomes[0] == outcomes[1]
