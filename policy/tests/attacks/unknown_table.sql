-- expect: sql-error
SELECT * FROM secrets
