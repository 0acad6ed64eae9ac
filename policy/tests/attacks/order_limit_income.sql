-- expect: limit
SELECT district, SUM(annual_income) AS s FROM residents GROUP BY district ORDER BY s DESC LIMIT 1
