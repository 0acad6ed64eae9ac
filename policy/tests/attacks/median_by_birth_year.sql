-- expect: not-a-group-key
SELECT birth_year, median(annual_income) FROM residents GROUP BY birth_year
