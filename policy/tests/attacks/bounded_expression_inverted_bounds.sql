-- expect: bounds
SELECT district, AVG(LEAST(GREATEST(annual_income, 1000000), 0)) FROM residents GROUP BY district
