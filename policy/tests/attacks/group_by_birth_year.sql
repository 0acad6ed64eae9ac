-- expect: not-a-group-key
SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year
