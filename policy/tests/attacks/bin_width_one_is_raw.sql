-- expect: not-a-group-key
SELECT birth_year - birth_year % 1 AS y, COUNT(*) FROM residents GROUP BY birth_year - birth_year % 1
