-- expect: group-key-expression
SELECT birth_year - household_size % 10 AS y, COUNT(*) FROM residents GROUP BY birth_year - household_size % 10
