-- expect: bounds
SELECT district, SUM(LEAST(GREATEST(annual_income, 0), CAST('inf' AS DOUBLE))) FROM residents GROUP BY district
