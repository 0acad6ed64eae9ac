-- expect: prohibited-column
WITH t AS (SELECT name AS n FROM residents) SELECT n FROM t
