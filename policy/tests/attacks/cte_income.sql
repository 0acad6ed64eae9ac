-- expect: conditional-raw
WITH t AS (SELECT annual_income AS a FROM residents) SELECT a FROM t
