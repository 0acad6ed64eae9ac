-- expect: sql-error
INSERT INTO residents VALUES (1)
