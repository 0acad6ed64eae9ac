-- expect: aggregate-input
SELECT district, SUM(LEAST(GREATEST((SELECT MAX(annual_income) FROM residents), 0), 10)) FROM residents GROUP BY district
