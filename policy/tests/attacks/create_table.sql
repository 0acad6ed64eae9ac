-- expect: sql-error
CREATE TABLE x AS SELECT * FROM residents
